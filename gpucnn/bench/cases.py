"""What the benchmark times: single layers of well-known networks, and whole training steps.

The shapes are well-known networks' (and smaller batches of them for one core); each case carries the work it does (FLOPs) and
the least memory traffic it needs (each input read once, each output written once), from
which the report derives FLOP/s and GB/s.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    """A convolution layer; nd = 1 for (N, C, L) signals, where H is 1 and only W counts."""
    name: str
    N: int
    C: int
    O: int
    H: int
    W: int
    k: int
    stride: int = 1
    padding: int = 0
    nd: int = 2
    dilation: int = 1
    groups: int = 1

    @property
    def kernel(self):
        return (1, self.k) if self.nd == 1 else (self.k, self.k)

    @property
    def stride2(self):
        return (1, self.stride) if self.nd == 1 else (self.stride, self.stride)

    @property
    def padding2(self):
        return (0, self.padding) if self.nd == 1 else (self.padding, self.padding)

    @property
    def dilation2(self):
        return (1, self.dilation) if self.nd == 1 else (self.dilation, self.dilation)

    @property
    def w_shape(self):
        return (self.O, self.C // self.groups) + self.kernel[2 - self.nd:]

    @property
    def out_hw(self):
        (KH, KW), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride2, self.padding2, self.dilation2
        return (self.H + 2 * ph - dh * (KH - 1) - 1) // sh + 1, (self.W + 2 * pw - dw * (KW - 1) - 1) // sw + 1

    def shape(self):
        x = f"{self.N}x{self.C}x{self.W}" if self.nd == 1 else f"{self.N}x{self.C}x{self.H}x{self.W}"
        options = (f" d{self.dilation}" if self.dilation > 1 else "") + (f" g{self.groups}" if self.groups > 1 else "")
        return f"{x} -> {self.O}, k{self.k} s{self.stride} p{self.padding}{options}"

    def flops(self):
        """Multiply-adds times 2; forward, backward-data and backward-weight each do this many."""
        OH, OW = self.out_hw
        return 2 * self.N * self.O * OH * OW * (self.C // self.groups) * self.kernel[0] * self.kernel[1]

    def bytes(self, op, itemsize=4):
        OH, OW = self.out_hw
        x, y = self.N * self.C * self.H * self.W, self.N * self.O * OH * OW
        w = self.O * (self.C // self.groups) * self.kernel[0] * self.kernel[1]
        # every op reads two of x, w and y and writes the third; all three ops together, thrice that
        return itemsize * (x + w + y) * (len(CONV_OPS) if op == FORWARD_BACKWARD else 1)


CONV_OPS = ("forward", "backward_data", "backward_weight")
# Each layer's ops of one round added up: what the layer costs in a training step.
FORWARD_BACKWARD = "forward+backward"


@dataclass(frozen=True)
class Pool:
    name: str
    N: int
    C: int
    H: int
    W: int
    k: int
    stride: int

    @property
    def out_hw(self):
        return (self.H - self.k) // self.stride + 1, (self.W - self.k) // self.stride + 1

    def shape(self):
        return f"{self.N}x{self.C}x{self.H}x{self.W}, k{self.k} s{self.stride}"

    def flops(self):
        return 0

    def bytes(self, op, itemsize=4):
        x = self.N * self.C * self.H * self.W
        y = self.N * self.C * self.out_hw[0] * self.out_hw[1]
        # x, y and the int32 argmax; backward: dy, argmax and dx
        return itemsize * (x + 2 * y) * (len(POOL_OPS) if op == FORWARD_BACKWARD else 1)


POOL_OPS = ("forward", "backward")


@dataclass(frozen=True)
class Norm:
    """A BatchNorm2d layer in training mode: batch statistics, running-statistics update, and
    the backward to the input, weight and bias."""
    name: str
    N: int
    C: int
    H: int
    W: int

    def shape(self):
        return f"{self.N}x{self.C}x{self.H}x{self.W}"

    def flops(self):
        return 0

    def bytes(self, op, itemsize=4):
        x = self.N * self.C * self.H * self.W
        # forward reads x (statistics, then normalizing) and writes y; backward reads x and dy, writes dx
        return itemsize * 3 * x * (len(NORM_OPS) if op == FORWARD_BACKWARD else 1)


NORM_OPS = ("forward", "backward")

LAYERS = [
    Conv("lenet.conv1", 128, 1, 6, 28, 28, 5, padding=2),
    Conv("lenet.conv2", 128, 6, 16, 14, 14, 5),
    Conv("lenet.conv1.b1", 1, 1, 6, 28, 28, 5, padding=2),
    Conv("lenet.conv2.b1", 1, 6, 16, 14, 14, 5),
    Conv("vgg.conv3-64", 128, 3, 64, 32, 32, 3, padding=1),
    Conv("vgg.conv64-64", 128, 64, 64, 32, 32, 3, padding=1),
    Conv("vgg.conv128-128", 128, 128, 128, 16, 16, 3, padding=1),
    Conv("vgg.conv256-256", 128, 256, 256, 8, 8, 3, padding=1),
    Conv("resnet.stem", 32, 3, 64, 224, 224, 7, stride=2, padding=3),
    Conv("resnet.1x1", 32, 256, 64, 56, 56, 1),
    Conv("audio.conv1d", 32, 1, 32, 1, 16000, 80, stride=4, nd=1),
    # Smaller batches of the same kinds of layer, sized for one core
    Conv("resnet.stem.b8", 8, 3, 64, 112, 112, 7, stride=2, padding=3),
    Conv("audio.conv1d.b8", 8, 1, 32, 1, 16000, 80, stride=4, nd=1),
    Conv("vgg.conv64-64.b16", 16, 64, 64, 32, 32, 3, padding=1),
    # The modern layers' convolutions: MobileNet's depthwise 3x3 (stride 1 and 2), a
    # ResNeXt-style grouped 3x3 (32 groups), a dilated 3x3 (DeepLab-style)
    Conv("mobilenet.dw3", 16, 64, 64, 56, 56, 3, padding=1, groups=64),
    Conv("mobilenet.dw3s2", 16, 64, 64, 56, 56, 3, stride=2, padding=1, groups=64),
    Conv("resnext.g32", 16, 128, 128, 28, 28, 3, padding=1, groups=32),
    Conv("deeplab.d2", 16, 64, 64, 32, 32, 3, padding=2, dilation=2),
    Pool("vgg.maxpool2", 128, 64, 32, 32, 2, 2),
    Pool("resnet.maxpool3s2", 32, 64, 112, 112, 3, 2),
    Norm("resnet20.bn16", 128, 16, 32, 32),
    Norm("resnet20.bn64", 128, 64, 8, 8),
    Norm("resnet.bn64", 32, 64, 112, 112),
]


def lenet5(nn):
    """LeNet-5 on 28x28 digits, built from gpucnn.nn or torch.nn (same names, same state_dict)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def vgg_cifar(nn):
    """A VGG-style CIFAR-10 net: three blocks of two 3x3 convolutions and a max pool."""
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(
        *block(3, 64), *block(64, 128), *block(128, 256),
        nn.Flatten(), nn.Linear(256 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10),
    )


class _TorchWithResidual:
    """torch.nn's names, and a Residual with gpucnn's children `body` and `shortcut`."""

    def __init__(self, torch_nn):
        class Residual(torch_nn.Module):
            def __init__(self, body, shortcut=None):
                super().__init__()
                self.body, self.shortcut = body, shortcut

            def forward(self, x):
                return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

        self._nn, self.Residual = torch_nn, Residual

    def __getattr__(self, name):
        return getattr(self._nn, name)


def resnet20(lib):
    """`--arch resnet` on CIFAR-10's 3x32x32 images: ResNet-20 (BatchNorm, residual blocks,
    global average pooling), from gpucnn.nn or, with a Residual added, torch.nn."""
    from .. import arch
    return arch.build_model("resnet", (3, 32, 32), 10, lib if hasattr(lib, "Residual") else _TorchWithResidual(lib))


@dataclass(frozen=True)
class Train:
    """One SGD training step (forward, loss, backward, update) of a whole network."""
    name: str
    build: object
    N: int
    C: int
    H: int
    W: int
    classes: int = 10

    def shape(self):
        return f"{self.N}x{self.C}x{self.H}x{self.W}"


TRAINING = [
    Train("lenet5.b128", lenet5, 128, 1, 28, 28),
    Train("lenet5.b512", lenet5, 512, 1, 28, 28),
    Train("lenet5.b1024", lenet5, 1024, 1, 28, 28),
    Train("vgg-cifar.b32", vgg_cifar, 32, 3, 32, 32),
    Train("vgg-cifar.b256", vgg_cifar, 256, 3, 32, 32),
    Train("resnet20.b128", resnet20, 128, 3, 32, 32),
]

# --quick: LeNet-5 alone, which runs in seconds on any machine.
QUICK = ("lenet.", "lenet5.b128")


def select(cases, only):
    """The cases whose name contains one of the comma-separated words of `only` (all when None)."""
    if not only:
        return list(cases)
    words = [w.strip() for w in only.split(",") if w.strip()]
    return [c for c in cases if any(w in c.name for w in words)]
