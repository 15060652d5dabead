"""Conv1d and Conv2d, with PyTorch's options: stride, padding (ints or 'same'/'valid'),
dilation and groups (depthwise: groups = in_channels). Forward, backward-data (the seeds'
rot180 "full" convolution), weight and bias gradients all come from the backend of the
input's device."""
import math

from .. import checks, cuda, functional as F
from ..backends import ops_for
from . import init
from .module import Module, Parameter


class _ConvNd(Module):
    nd = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros"):
        super().__init__()
        name = type(self).__name__
        self.in_channels = checks.positive(name, "in_channels", in_channels)
        self.out_channels = checks.positive(name, "out_channels", out_channels)
        self.kernel_size, self.stride, self.padding, self.dilation, self.groups = F.conv_options(
            name, kernel_size, stride, padding, dilation, groups, self.nd)
        for what, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % self.groups:
                raise ValueError(f"{name}: {what} must be divisible by groups, but got {what}={channels}, "
                                 f"groups={self.groups}")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, but got padding_mode={padding_mode!r}")
        self.padding_mode = padding_mode
        fan_in = in_channels // self.groups * math.prod(self.kernel_size)
        self.weight = Parameter(init.kaiming_uniform((out_channels, in_channels // self.groups) + self.kernel_size,
                                                     fan_in))
        self.bias = Parameter(init.bias_uniform((out_channels,), fan_in)) if bias else None
        self._x = None

    def forward(self, x):
        w, b = self.weight.data, self.bias.data if self.bias is not None else None
        g = F.conv_args(type(self).__name__, x, w, b, self.stride, self.padding, self.nd, self.dilation, self.groups)
        self._x, self._geometry = F.pad_end(F.as_2d(x, self.nd), g.extra), g
        y = F.from_2d(ops_for(x).conv2d_forward(self._x, F.as_2d(w, self.nd), b, *g.options), self.nd)
        self._y_shape, self._x_shape = y.shape, F.as_2d(x, self.nd).shape
        return y

    def backward(self, dy):
        dy = self._parameter_gradients(dy)
        x, g, nd = self._x, self._geometry, self.nd
        dx = ops_for(x).conv2d_backward_data(dy, F.as_2d(self.weight.data, nd), x.shape, *g.options)
        H, W = self._x_shape[2:]
        return F.from_2d(dx[:, :, :H, :W], nd)  # without the zeros pad_end added for padding='same'

    def parameters_backward(self, dy):
        self._parameter_gradients(dy)

    def _parameter_gradients(self, dy):
        """Accumulates the weight and bias gradients; returns dy as the 2D ops take it."""
        x = self.saved("_x")
        cuda.check_same_device(f"{type(self).__name__}.backward", dy=dy, input=x)
        checks.gradient(type(self).__name__, dy, self._y_shape, x.dtype)
        g, ops, nd = self._geometry, ops_for(x), self.nd
        dy = F.as_2d(dy, nd)
        w_shape = F.as_2d(self.weight.data, nd).shape
        self.weight.accumulate(F.from_2d(ops.conv2d_backward_weight(x, dy, w_shape, *g.options), nd))
        if self.bias is not None:
            self.bias.accumulate(ops.conv2d_backward_bias(dy))
        return dy

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if isinstance(self.padding, str) or any(self.padding):
            s += f", padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class Conv1d(_ConvNd):
    """1D convolution over (N, C, L), e.g. audio (seed 004): the 2D kernels with H = 1."""
    nd = 1


class Conv2d(_ConvNd):
    """2D convolution over (N, C, H, W); kernel_size, stride, padding, dilation: int or (h, w)."""
    nd = 2
