"""The contestants behind one interface: gpucnn (NumPy or our CUDA kernels) and PyTorch.

Each turns a case into zero-argument callables on data already on its device, and times
a callable: wall clock on the CPU, CUDA events on a GPU (CuPy's for gpucnn, PyTorch's
for PyTorch), which time the device from the first kernel queued to the last.
"""
import time

import numpy as np

from .. import cuda, nn, optim, precision as float32_precision
from ..backends import ops_for
from ..functional import as_2d


class Gpucnn:
    """gpucnn under set_float32_matmul_precision(precision): "highest" (strict float32, the
    default, and all there is on the CPU) or "high" (TF32 convolutions and linear layers)."""
    name = "gpucnn"

    def __init__(self, device, precision="highest"):
        self.device, self.precision = device, precision
        self.xp = cuda.get_array_module(self.array(np.zeros(1, np.float32)))

    def array(self, a):
        return cuda.to_device(np.ascontiguousarray(a), self.device)

    def loss_value(self, loss):
        return float(loss)  # a 0-d array on the device, as torch's

    def time(self, fn):
        """Seconds that fn() takes on this device."""
        float32_precision.set_float32_matmul_precision(self.precision)
        xp = self.xp
        if xp is not cuda.cupy_if_loaded():  # NumPy, or the emulator's stand-in for CuPy
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        start, stop = xp.cuda.Event(), xp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return xp.cuda.get_elapsed_time(start, stop) / 1e3

    def conv(self, case, x, w, b, dy):
        """{op: fn} for a cases.Conv; 1D layers run the 2D ops with H = 1, as nn.Conv1d does."""
        x, w, b, dy = (self.array(a) for a in (x, w, b, dy))
        x, w, dy = (as_2d(a, case.nd) for a in (x, w, dy))
        ops, options = ops_for(x), (case.stride2, case.padding2, case.dilation2, case.groups)
        return {
            "forward": lambda: ops.conv2d_forward(x, w, b, *options),
            "backward_data": lambda: ops.conv2d_backward_data(dy, w, x.shape, *options),
            "backward_weight": lambda: ops.conv2d_backward_weight(x, dy, w.shape, *options),
        }

    def pool(self, case, x, dy):
        x, dy = self.array(x), self.array(dy)
        ops, kernel, stride = ops_for(x), (case.k, case.k), (case.stride, case.stride)
        _, argmax = ops.max_pool2d_forward(x, kernel, stride)
        return {
            "forward": lambda: ops.max_pool2d_forward(x, kernel, stride),
            "backward": lambda: ops.max_pool2d_backward(dy, argmax, x.shape, kernel, stride),
        }

    def norm(self, case, x, dy):
        """{op: fn} for a cases.Norm: nn.BatchNorm2d in training mode, its backward after a forward."""
        x, dy = self.array(x), self.array(dy)
        layer = nn.BatchNorm2d(case.C).to(self.device)
        layer(x)
        return {"forward": lambda: layer(x), "backward": lambda: layer.backward(dy)}

    def trainer(self, build, state_dict, x, y):
        """step() trains build(gpucnn.nn), started from these weights, once with SGD; returns the loss."""
        model = build(nn).to(self.device)
        model.load_state_dict(state_dict)
        x, y = self.array(x), self.array(y)
        # The bench draws y from range(classes); checking it would read it back at every step,
        # a wait for the GPU that PyTorch's step does not have.
        criterion = nn.CrossEntropyLoss(validate_args=False)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            loss = criterion(model(x), y)
            model.backward(criterion.backward(), input_grad=False)  # as torch: x needs no grad
            opt.step()
            return loss

        return step


class Torch:
    """PyTorch on the same device. On a GPU, tf32 sets both of its TF32 switches, for
    convolutions (`torch.backends.cudnn.allow_tf32`, True by default) and for matmuls
    (`torch.backends.cuda.matmul.allow_tf32`, False by default): off, it matches gpucnn's
    "highest"; on, gpucnn's "high". Neither has any effect on the CPU."""
    name = "torch"

    def __init__(self, device, tf32=False):
        import torch
        self.torch, self.device, self.tf32 = torch, device, tf32

    def array(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _precision(self):
        """TF32 is a global switch in PyTorch: set it before each of this contestant's runs."""
        if self.device == "cuda":
            self.torch.backends.cudnn.allow_tf32 = self.tf32
            self.torch.backends.cuda.matmul.allow_tf32 = self.tf32

    def time(self, fn):
        self._precision()
        if self.device != "cuda":
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        start, stop = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3

    def conv(self, case, x, w, b, dy):
        torch = self.torch
        x, w, b, dy = (self.array(a) for a in (x, w, b, dy))
        options = (case.stride, case.padding, case.dilation, case.groups)
        conv = torch.nn.functional.conv1d if case.nd == 1 else torch.nn.functional.conv2d
        grad = torch.nn.grad
        conv_input = grad.conv1d_input if case.nd == 1 else grad.conv2d_input
        conv_weight = grad.conv1d_weight if case.nd == 1 else grad.conv2d_weight
        return {
            "forward": lambda: conv(x, w, b, *options),
            "backward_data": lambda: conv_input(x.shape, w, dy, *options),
            "backward_weight": lambda: conv_weight(x, w.shape, dy, *options),
        }

    def pool(self, case, x, dy):
        torch = self.torch
        x, dy = self.array(x), self.array(dy)
        k, s = [case.k] * 2, [case.stride] * 2
        _, indices = torch.nn.functional.max_pool2d(x, k, s, return_indices=True)
        return {
            "forward": lambda: torch.nn.functional.max_pool2d(x, k, s, return_indices=True),
            "backward": lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                dy, x, k, s, [0, 0], [1, 1], False, indices),
        }

    def norm(self, case, x, dy):
        torch = self.torch
        x, dy = self.array(x), self.array(dy)
        layer = torch.nn.BatchNorm2d(case.C).to(self.device)
        x.requires_grad_(True)
        y = layer(x)
        inputs = [x, layer.weight, layer.bias]
        return {"forward": lambda: layer(x),
                "backward": lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)}

    def trainer(self, build, state_dict, x, y):
        torch = self.torch
        model = build(torch.nn).to(self.device)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
        x, y = self.array(x), self.array(y.astype(np.int64))
        criterion = torch.nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            return loss

        return step

    def loss_value(self, loss):
        return loss.item()


def torch_version():
    """PyTorch's version, or None where it is not installed (the `bench` extra)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__
