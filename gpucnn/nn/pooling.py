"""Max and average pooling, with PyTorch's padding and ceil_mode (and count_include_pad for
average pooling). Max pooling keeps the argmax from forward and routes the gradient through
it; average pooling splits the gradient evenly (seeds 001-003)."""
from .. import checks, cuda, functional as F
from ..backends import ops_for
from .module import Module


class _PoolNd(Module):
    nd = None

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = F.pool_options(
            type(self).__name__, kernel_size, stride, padding, self.nd)
        self.ceil_mode = bool(ceil_mode)
        self._x_shape = None

    def _geometry(self, x):
        """The 2D ops' arguments after x (or dy, ...): kernel, stride, padding, ceil_mode."""
        kernel, stride, padding = F.pool_args(type(self).__name__, x, self.kernel_size, self.stride, self.nd,
                                              self.padding)
        self._x_shape, self._options = F.as_2d(x, self.nd).shape, (kernel, stride, padding, self.ceil_mode)
        return self._options

    def _output(self, y):
        """y, its shape and dtype kept: backward's dy must have them."""
        self._y_shape, self._y_dtype = y.shape, y.dtype
        return y

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _MaxPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, *, ceil_mode=False):
        """ceil_mode is keyword-only: PyTorch's positional order has dilation and
        return_indices (not supported) before it."""
        super().__init__(kernel_size, stride, padding, ceil_mode)

    def forward(self, x):
        y, self._argmax = ops_for(x).max_pool2d_forward(F.as_2d(x, self.nd), *self._geometry(x))
        return self._output(F.from_2d(y, self.nd))

    def backward(self, dy):
        x_shape = self.saved("_x_shape")
        cuda.check_same_device(f"{type(self).__name__}.backward", dy=dy, argmax=self._argmax)
        checks.gradient(type(self).__name__, dy, self._y_shape, self._y_dtype)
        dx = ops_for(dy).max_pool2d_backward(F.as_2d(dy, self.nd), self._argmax, x_shape, *self._options)
        return F.from_2d(dx, self.nd)

    def extra_repr(self):
        return super().extra_repr() + f", ceil_mode={self.ceil_mode}"


class _AvgPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        y = ops_for(x).avg_pool2d_forward(F.as_2d(x, self.nd), *self._geometry(x), self.count_include_pad)
        return self._output(F.from_2d(y, self.nd))

    def backward(self, dy):
        x_shape = self.saved("_x_shape")
        checks.gradient(type(self).__name__, dy, self._y_shape, self._y_dtype)
        dx = ops_for(dy).avg_pool2d_backward(F.as_2d(dy, self.nd), x_shape, *self._options, self.count_include_pad)
        return F.from_2d(dx, self.nd)


class MaxPool1d(_MaxPoolNd):
    nd = 1


class MaxPool2d(_MaxPoolNd):
    nd = 2


class AvgPool1d(_AvgPoolNd):
    nd = 1


class AvgPool2d(_AvgPoolNd):
    nd = 2
