"""Networks from a short spec: the seeds' family  INPUT -> [[CONV]*N -> POOL?]*M -> [FC]*K,
and residual networks built of the same kind of tokens.

A spec is a string of space-separated layers, read left to right:

    conv<C>k<K>[s<S>][p<P>][bn]  Conv2d to C channels, K x K kernel, stride S (1), padding P (0);
                                 with bn: no bias, then BatchNorm2d; then ReLU
    res<C>[s<S>][x<N>]           N (1) basic residual blocks to C channels, the first with stride S (1):
                                 conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU; the shortcut is
                                 the identity, or a 1x1 conv (stride S, no bias) and BN where the block
                                 changes the channels or the size (He et al.'s projection, option B)
    pool<K>[s<S>]                MaxPool2d, K x K window, stride S (K)
    avgpool<K>[s<S>]             AvgPool2d, likewise
    gap                          global average pooling: AdaptiveAvgPool2d(1)
    drop<P>                      Dropout(P), 0 <= P < 1, anywhere (e.g. drop0.5 before the classifier)
    fc<N>                        Linear to N features, then ReLU (Flatten comes before the first one)

Convolutions, residual blocks and pools come first, fully connected layers last; the
classifier, Linear(features, num_classes), is appended. So LeNet-5 is

    conv6k5p2 pool2 conv16k5p2 pool2 fc120 fc84

which, padded, fits 8x8 digits as well as 28x28 MNIST and 32x32 CIFAR-10 images, and
ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2: 3 stages of 3 blocks, 16, 32 and 64
channels, 6*3 + 2 = 20 layers with weights) is

    conv16k3p1bn res16x3 res32s2x3 res64s2x3 gap

The preset `resnet` is that net; `resnet<D>-w<W>` is the same shape with depth D = 6n + 2
(n blocks per stage) and W stem channels (W, 2W, 4W per stage), e.g. resnet32-w32.
Each block is two layers of nn.Sequential: nn.Residual(body, shortcut) and its ReLU, so
its keys in state_dict() read like `3.body.0.weight`, `3.shortcut.1.running_mean`.
"""
import re

from . import checks
from . import nn

PRESETS = {
    "lenet5": "conv6k5p2 pool2 conv16k5p2 pool2 fc120 fc84",
    # LeNet-5's layout with 3x3 kernels and twice the filters, a better fit for 8x8 digits,
    # where a 5x5 kernel covers most of the image: 98.1-99.2% on them (3 seeds x 2 splits) against
    # LeNet-5's 97.5-98.6%.
    "lenet5-3x3": "conv16k3p1 pool2 conv32k3p1 pool2 fc120 fc84",
    "vgg": "conv32k3p1 conv32k3p1 pool2 conv64k3p1 conv64k3p1 pool2 fc128",
    "resnet": "conv16k3p1bn res16x3 res32s2x3 res64s2x3 gap",
}

_CONV = re.compile(r"conv(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?(bn)?")
_RES = re.compile(r"res(\d+)(?:s(\d+))?(?:x(\d+))?")
_POOL = re.compile(r"(avg)?pool(\d+)(?:s(\d+))?")
_DROP = re.compile(r"drop(\d*\.?\d+)")
_FC = re.compile(r"fc(\d+)")
_RESNET = re.compile(r"resnet(\d+)(?:-w(\d+))?|resnet-w(\d+)")


def resnet_spec(depth=20, width=16):
    """The spec of a CIFAR-style ResNet of `depth` = 6n + 2 layers and `width` stem channels."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"arch: a CIFAR-style ResNet has depth 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), but got {depth}")
    if width < 1:
        raise ValueError(f"arch: the ResNet's width must be positive, but got {width}")
    n = (depth - 2) // 6
    return f"conv{width}k3p1bn res{width}x{n} res{2 * width}s2x{n} res{4 * width}s2x{n} gap"


def resolve(arch):
    """The spec of a preset name (or of resnet<D>-w<W>), or the spec itself."""
    named = _RESNET.fullmatch(arch)
    if named:
        return resnet_spec(int(named[1] or 20), int(named[2] or named[3] or 16))
    return PRESETS.get(arch, arch)


def _positive(token, what, text):
    value = int(text)
    if value <= 0:
        raise ValueError(f"arch: {what} in {token!r} must be positive, but got {value}")
    return value


def conv_bn_relu(lib, cin, cout, k, stride, padding, bn):
    if not bn:
        return [lib.Conv2d(cin, cout, k, stride=stride, padding=padding), lib.ReLU()]
    return [lib.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False), lib.BatchNorm2d(cout), lib.ReLU()]


def basic_block(lib, cin, cout, stride):
    """ResNet's basic block, its ReLU after the sum: [Residual(body, shortcut), ReLU]."""
    body = lib.Sequential(*conv_bn_relu(lib, cin, cout, 3, stride, 1, True),
                          lib.Conv2d(cout, cout, 3, padding=1, bias=False), lib.BatchNorm2d(cout))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = lib.Sequential(lib.Conv2d(cin, cout, 1, stride=stride, bias=False), lib.BatchNorm2d(cout))
    return [lib.Residual(body, shortcut), lib.ReLU()]


def build_model(arch, in_shape, num_classes, lib=nn):
    """nn.Sequential for `arch` (a preset name or a spec) on inputs of shape (C, H, W).

    `lib` is where the layers come from: gpucnn.nn, or any namespace with torch.nn's names
    and arguments (torch.nn plus a Residual(body, shortcut), as the bench builds its rival),
    which then gives the same net with the same state_dict keys."""
    spec = resolve(arch)
    tokens = spec.split()
    if not tokens:
        raise ValueError(f"arch: expected a preset name ({', '.join(PRESETS)}) or a layer spec, but got {arch!r}")
    channels, height, width = in_shape
    layers, features = [], None  # features: set once the fully connected part has begun
    for position, token in enumerate(tokens, 1):
        where = (position, token, height, width)  # for _check_size's message
        conv, res, pool, drop, fc = (r.fullmatch(token) for r in (_CONV, _RES, _POOL, _DROP, _FC))
        if (conv or res or pool or token == "gap") and features is not None:
            raise ValueError(
                f"arch: {token!r} comes after a fully connected layer; the family is "
                f"INPUT -> [[CONV]*N -> POOL?]*M -> [FC]*K, so convolutions and pools come first")
        if conv:
            out = _positive(token, "channels", conv[1])
            k = _positive(token, "kernel size", conv[2])
            s = _positive(token, "stride", conv[3] or "1")
            p = int(conv[4] or 0)
            height, width = (checks.output_size(d, k, s, p) for d in (height, width))
            _check_size(where, height, width, in_shape)
            layers += conv_bn_relu(lib, channels, out, k, s, p, bool(conv[5]))
            channels = out
        elif res:
            out = _positive(token, "channels", res[1])
            s = _positive(token, "stride", res[2] or "1")
            for i in range(_positive(token, "block count", res[3] or "1")):
                layers += basic_block(lib, channels, out, s if i == 0 else 1)
                channels = out
            height, width = (checks.output_size(d, 3, s, 1) for d in (height, width))
            _check_size(where, height, width, in_shape)
        elif pool:
            k = _positive(token, "window", pool[2])
            s = _positive(token, "stride", pool[3] or pool[2])
            height, width = (checks.output_size(d, k, s, 0) for d in (height, width))
            _check_size(where, height, width, in_shape)
            layers.append(lib.AvgPool2d(k, s) if pool[1] else lib.MaxPool2d(k, s))
        elif token == "gap":
            layers.append(lib.AdaptiveAvgPool2d(1))
            height = width = 1
        elif drop:
            p = float(drop[1])
            if not p < 1:
                raise ValueError(f"arch: the dropout probability in {token!r} must be below 1, but got {p}")
            layers.append(lib.Dropout(p))
        elif fc:
            if features is None:
                features = channels * height * width
                layers.append(lib.Flatten())
            out = _positive(token, "features", fc[1])
            layers += [lib.Linear(features, out), lib.ReLU()]
            features = out
        else:
            raise ValueError(
                f"arch: unknown layer {token!r} in {spec!r}; expected conv<C>k<K>[s<S>][p<P>][bn], "
                f"res<C>[s<S>][x<N>], pool<K>[s<S>], avgpool<K>[s<S>], gap, drop<P> or fc<N>")
    if features is None:
        features = channels * height * width
        layers.append(lib.Flatten())
    layers.append(lib.Linear(features, num_classes))
    return lib.Sequential(*layers)


def _check_size(where, height, width, in_shape):
    position, token, in_height, in_width = where
    if height < 1 or width < 1:
        raise ValueError(
            f"arch: {token!r} (layer {position} of the spec) leaves no output (size {height}x{width}): it gets a "
            f"{in_height}x{in_width} input from images of shape {checks.shape_str(in_shape)}; use padding, "
            f"a smaller kernel or fewer pools")
