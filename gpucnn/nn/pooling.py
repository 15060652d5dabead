"""Max and average pooling. Max pooling keeps the argmax from forward and routes the
gradient through it; average pooling splits the gradient evenly (seeds 001-003)."""
from .. import checks, cuda, functional as F
from ..backends import ops_for
from .module import Module


class _PoolNd(Module):
    nd = None

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = checks.positive(name, "kernel_size", checks.tuple_arg(name, "kernel_size", kernel_size, self.nd))
        self.stride = self.kernel_size if stride is None else checks.positive(
            name, "stride", checks.tuple_arg(name, "stride", stride, self.nd))
        self._x_shape = None

    def _geometry(self, x):
        kernel, stride = F.pool_args(type(self).__name__, x, self.kernel_size, self.stride, self.nd)
        self._x_shape, self._kernel_stride = F.as_2d(x, self.nd).shape, (kernel, stride)
        return kernel, stride

    def _output(self, y):
        """y, its shape and dtype kept: backward's dy must have them."""
        self._y_shape, self._y_dtype = y.shape, y.dtype
        return y

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class _MaxPoolNd(_PoolNd):
    def forward(self, x):
        kernel, stride = self._geometry(x)
        y, self._argmax = ops_for(x).max_pool2d_forward(F.as_2d(x, self.nd), kernel, stride)
        return self._output(F.from_2d(y, self.nd))

    def backward(self, dy):
        x_shape = self.saved("_x_shape")
        cuda.check_same_device(f"{type(self).__name__}.backward", dy=dy, argmax=self._argmax)
        checks.gradient(type(self).__name__, dy, self._y_shape, self._y_dtype)
        dx = ops_for(dy).max_pool2d_backward(F.as_2d(dy, self.nd), self._argmax, x_shape, *self._kernel_stride)
        return F.from_2d(dx, self.nd)


class _AvgPoolNd(_PoolNd):
    def forward(self, x):
        kernel, stride = self._geometry(x)
        return self._output(F.from_2d(ops_for(x).avg_pool2d_forward(F.as_2d(x, self.nd), kernel, stride), self.nd))

    def backward(self, dy):
        x_shape = self.saved("_x_shape")
        checks.gradient(type(self).__name__, dy, self._y_shape, self._y_dtype)
        dx = ops_for(dy).avg_pool2d_backward(F.as_2d(dy, self.nd), x_shape, *self._kernel_stride)
        return F.from_2d(dx, self.nd)


class MaxPool1d(_MaxPoolNd):
    nd = 1


class MaxPool2d(_MaxPoolNd):
    nd = 2


class AvgPool1d(_AvgPoolNd):
    nd = 1


class AvgPool2d(_AvgPoolNd):
    nd = 2
