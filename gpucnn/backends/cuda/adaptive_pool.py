"""Adaptive average pooling on device "cuda": launches of cuda_kernels/adaptive_pool2d.cu
(see `gpucnn.backends`)."""
from . import _kernels, launch

_kernels.declare("adaptive_pool2d.cu", {
    "adaptive_avg_pool2d_forward": "{T}",
    "adaptive_avg_pool2d_backward_gather": "{T}",
})


def adaptive_avg_pool2d_forward(x, output_size):
    (xc,) = _kernels.inputs("adaptive_avg_pool2d_forward", x=x)
    N, C, H, W = x.shape
    OH, OW = output_size
    y = _kernels.empty((N, C, OH, OW), x.dtype, like=x)
    _kernels.launch_kernel("adaptive_avg_pool2d_forward", launch.elementwise(y.size), x,
                           (xc, y) + _kernels.ints(N, C, H, W, OH, OW))
    return y


def adaptive_avg_pool2d_backward(dy, x_shape):
    (dyc,) = _kernels.inputs("adaptive_avg_pool2d_backward", dy=dy)
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    _kernels.expect_shape("adaptive_avg_pool2d_backward", "dy", dy, (N, C, OH, OW))
    dx = _kernels.empty(x_shape, dy.dtype, like=dy)
    _kernels.launch_kernel("adaptive_avg_pool2d_backward_gather", launch.elementwise(dx.size), dy,
                           (dyc, dx) + _kernels.ints(N, C, H, W, OH, OW))
    return dx
