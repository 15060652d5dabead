"""ReLU on device "cuda": launches of cuda_kernels/relu.cu (see `gpucnn.backends`)."""
import numpy as np

from . import _kernels, launch

_kernels.declare("relu.cu", {
    "relu_forward": "{T}",
    "relu_backward": "{T}",
})


def relu_forward(x):
    (xc,) = _kernels.inputs("relu_forward", x=x)
    y = _kernels.empty(x.shape, x.dtype, like=x)
    _kernels.launch_kernel("relu_forward", launch.elementwise(x.size), x, (xc, y, np.int64(x.size)))
    return y


def relu_backward(dy, y):
    dyc, yc = _kernels.inputs("relu_backward", dy=dy, y=y)
    _kernels.expect_shape("relu_backward", "y", y, dy.shape)
    dx = _kernels.empty(dy.shape, dy.dtype, like=dy)
    _kernels.launch_kernel("relu_backward", launch.elementwise(dy.size), dy, (dyc, yc, dx, np.int64(dy.size)))
    return dx
