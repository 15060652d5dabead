"""Max and average pooling on device "cuda": launches of cuda_kernels/pool2d.cu (see `gpucnn.backends`)."""
from collections import namedtuple

import numpy as np

from ... import checks, cuda
from . import _kernels, launch

_kernels.declare("pool2d.cu", {
    "max_pool2d_forward": "{T}",
    "max_pool2d_backward_gather": "{T}",
    "avg_pool2d_forward": "{T}",
    "avg_pool2d_backward_gather": "{T}",
})


class PoolGeometry(namedtuple("PoolGeometry", "N C H W KH KW SH SW OH OW")):
    """A pooling's sizes: the pooling kernels' int parameters, in their order."""

    @property
    def y_shape(self):
        return (self.N, self.C, self.OH, self.OW)


def _pool_geometry(x_shape, kernel, stride):
    N, C, H, W = x_shape
    (KH, KW), (SH, SW) = kernel, stride
    return PoolGeometry(N, C, H, W, KH, KW, SH, SW, checks.output_size(H, KH, SH, 0), checks.output_size(W, KW, SW, 0))


def max_pool2d_forward(x, kernel, stride):
    (xc,) = _kernels.inputs("max_pool2d_forward", x=x)
    g = _pool_geometry(x.shape, kernel, stride)
    y = _kernels.empty(g.y_shape, x.dtype, like=x)
    argmax = _kernels.empty(g.y_shape, np.int32, like=x)
    _kernels.launch_kernel("max_pool2d_forward", launch.elementwise(y.size), x, (xc, y, argmax) + _kernels.ints(*g))
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride):
    (dyc,) = _kernels.inputs("max_pool2d_backward", dy=dy)
    if argmax.dtype != np.int32:
        raise ValueError(f"max_pool2d_backward: expected argmax of dtype int32, but got {argmax.dtype}")
    g = _pool_geometry(x_shape, kernel, stride)
    _kernels.expect_shape("max_pool2d_backward", "dy", dy, g.y_shape)
    _kernels.expect_shape("max_pool2d_backward", "argmax", argmax, dy.shape)
    argmaxc = cuda.get_array_module(argmax).ascontiguousarray(argmax)
    dx = _kernels.empty(x_shape, dy.dtype, like=dy)
    _kernels.launch_kernel("max_pool2d_backward_gather", launch.elementwise(dx.size), dy,
                           (dyc, argmaxc, dx) + _kernels.ints(*g))
    return dx


def avg_pool2d_forward(x, kernel, stride):
    (xc,) = _kernels.inputs("avg_pool2d_forward", x=x)
    g = _pool_geometry(x.shape, kernel, stride)
    y = _kernels.empty(g.y_shape, x.dtype, like=x)
    _kernels.launch_kernel("avg_pool2d_forward", launch.elementwise(y.size), x, (xc, y) + _kernels.ints(*g))
    return y


def avg_pool2d_backward(dy, x_shape, kernel, stride):
    (dyc,) = _kernels.inputs("avg_pool2d_backward", dy=dy)
    g = _pool_geometry(x_shape, kernel, stride)
    _kernels.expect_shape("avg_pool2d_backward", "dy", dy, g.y_shape)
    dx = _kernels.empty(x_shape, dy.dtype, like=dy)
    _kernels.launch_kernel("avg_pool2d_backward_gather", launch.elementwise(dx.size), dy, (dyc, dx) + _kernels.ints(*g))
    return dx
