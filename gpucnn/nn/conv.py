"""Conv1d and Conv2d. Forward, backward-data (the seeds' rot180 "full" convolution),
weight and bias gradients all come from the backend of the input's device."""
import math

from .. import checks, cuda, functional as F
from ..backends import ops_for
from . import init
from .module import Module, Parameter


class _ConvNd(Module):
    nd = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        name = type(self).__name__
        self.in_channels = checks.positive(name, "in_channels", in_channels)
        self.out_channels = checks.positive(name, "out_channels", out_channels)
        self.kernel_size = checks.positive(name, "kernel_size", checks.tuple_arg(name, "kernel_size", kernel_size, self.nd))
        self.stride = checks.positive(name, "stride", checks.tuple_arg(name, "stride", stride, self.nd))
        self.padding = checks.non_negative(name, "padding", checks.tuple_arg(name, "padding", padding, self.nd))
        fan_in = in_channels * math.prod(self.kernel_size)
        self.weight = Parameter(init.kaiming_uniform((out_channels, in_channels) + self.kernel_size, fan_in))
        self.bias = Parameter(init.bias_uniform((out_channels,), fan_in)) if bias else None
        self._x = None

    def forward(self, x):
        w, b = self.weight.data, self.bias.data if self.bias is not None else None
        stride, padding = F.conv_args(type(self).__name__, x, w, b, self.stride, self.padding, self.nd)
        self._x, self._geometry = F.as_2d(x, self.nd), (stride, padding)
        y = F.from_2d(ops_for(x).conv2d_forward(self._x, F.as_2d(w, self.nd), b, stride, padding), self.nd)
        self._y_shape = y.shape
        return y

    def backward(self, dy):
        x = self.saved("_x")
        cuda.check_same_device(f"{type(self).__name__}.backward", dy=dy, input=x)
        checks.gradient(type(self).__name__, dy, self._y_shape, x.dtype)
        stride, padding = self._geometry
        ops, nd = ops_for(x), self.nd
        dy = F.as_2d(dy, nd)
        w = F.as_2d(self.weight.data, nd)
        self.weight.accumulate(F.from_2d(ops.conv2d_backward_weight(x, dy, w.shape, stride, padding), nd))
        if self.bias is not None:
            self.bias.accumulate(ops.conv2d_backward_bias(dy))
        dx = ops.conv2d_backward_data(dy, w, x.shape, stride, padding)
        return F.from_2d(dx, nd)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            s += f", padding={self.padding}"
        return s + ("" if self.bias is not None else ", bias=False")


class Conv1d(_ConvNd):
    """1D convolution over (N, C, L), e.g. audio (seed 004): the 2D kernels with H = 1."""
    nd = 1


class Conv2d(_ConvNd):
    """2D convolution over (N, C, H, W); kernel_size, stride, padding: int or (h, w)."""
    nd = 2
