"""Max and average pooling on device "cuda": launches of cuda_kernels/pool2d.cu (see `gpucnn.backends`),
with zero padding and PyTorch's ceil mode."""
from collections import namedtuple

import numpy as np

from ... import checks, cuda
from . import _kernels, launch

_kernels.declare("pool2d.cu", {
    "max_pool2d_forward": f"{{T}}, {launch.ELEMENTWISE_BLOCK}",
    "max_pool2d_backward_gather": f"{{T}}, {launch.ELEMENTWISE_BLOCK}",
    "avg_pool2d_forward": f"{{T}}, {launch.ELEMENTWISE_BLOCK}",
    "avg_pool2d_backward_gather": f"{{T}}, {launch.ELEMENTWISE_BLOCK}",
})


class PoolGeometry(namedtuple("PoolGeometry", "N C H W KH KW SH SW PH PW OH OW")):
    """A pooling's sizes: the pooling kernels' int parameters, in their order."""

    @property
    def y_shape(self):
        return (self.N, self.C, self.OH, self.OW)


def _pool_geometry(op, x_shape, kernel, stride, padding, ceil_mode):
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (PH, PW) = kernel, stride, padding
    # The kernels read at least one input of every window.
    checks.pool_plane(op, x_shape)
    checks.pool_padding(op, kernel, padding)
    OH, OW = checks.pool_output_size(H, KH, SH, PH, ceil_mode), checks.pool_output_size(W, KW, SW, PW, ceil_mode)
    return PoolGeometry(N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW)


def max_pool2d_forward(x, kernel, stride, padding=(0, 0), ceil_mode=False):
    (xc,) = _kernels.inputs("max_pool2d_forward", x=x)
    g = _pool_geometry("max_pool2d_forward", x.shape, kernel, stride, padding, ceil_mode)
    y = _kernels.empty(g.y_shape, x.dtype, like=x)
    argmax = _kernels.empty(g.y_shape, np.int32, like=x)
    _kernels.launch_kernel("max_pool2d_forward", launch.elementwise(y.size), x, (xc, y, argmax) + _kernels.ints(*g))
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride, padding=(0, 0), ceil_mode=False):
    (dyc,) = _kernels.inputs("max_pool2d_backward", dy=dy)
    if argmax.dtype != np.int32:
        raise ValueError(f"max_pool2d_backward: expected argmax of dtype int32, but got {argmax.dtype}")
    g = _pool_geometry("max_pool2d_backward", x_shape, kernel, stride, padding, ceil_mode)
    _kernels.expect_shape("max_pool2d_backward", "dy", dy, g.y_shape)
    _kernels.expect_shape("max_pool2d_backward", "argmax", argmax, dy.shape)
    argmaxc = cuda.get_array_module(argmax).ascontiguousarray(argmax)
    dx = _kernels.empty(x_shape, dy.dtype, like=dy)
    _kernels.launch_kernel("max_pool2d_backward_gather", launch.elementwise(dx.size), dy,
                           (dyc, argmaxc, dx) + _kernels.ints(*g))
    return dx


def avg_pool2d_forward(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    (xc,) = _kernels.inputs("avg_pool2d_forward", x=x)
    g = _pool_geometry("avg_pool2d_forward", x.shape, kernel, stride, padding, ceil_mode)
    y = _kernels.empty(g.y_shape, x.dtype, like=x)
    _kernels.launch_kernel("avg_pool2d_forward", launch.elementwise(y.size), x,
                           (xc, y) + _kernels.ints(*g, count_include_pad))
    return y


def avg_pool2d_backward(dy, x_shape, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    (dyc,) = _kernels.inputs("avg_pool2d_backward", dy=dy)
    g = _pool_geometry("avg_pool2d_backward", x_shape, kernel, stride, padding, ceil_mode)
    _kernels.expect_shape("avg_pool2d_backward", "dy", dy, g.y_shape)
    dx = _kernels.empty(x_shape, dy.dtype, like=dy)
    _kernels.launch_kernel("avg_pool2d_backward_gather", launch.elementwise(dx.size), dy,
                           (dyc, dx) + _kernels.ints(*g, count_include_pad))
    return dx
