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


_kernels.declare("activation.cu", {
    name: "{T}" for name in ("leaky_relu_forward", "leaky_relu_backward", "sigmoid_forward", "sigmoid_backward",
                             "tanh_forward", "tanh_backward", "gelu_forward", "gelu_backward")
})


def _pointwise(kernel, out_like, arrays, scalars=()):
    """Launch an elementwise kernel of activation.cu over arrays of one shape (scalars after n)."""
    contiguous = _kernels.inputs(kernel, **arrays)
    first = next(iter(arrays.values()))
    for name, a in arrays.items():
        _kernels.expect_shape(kernel, name, a, first.shape)
    out = _kernels.empty(first.shape, first.dtype, like=out_like)
    _kernels.launch_kernel(kernel, launch.elementwise(first.size), out_like,
                           tuple(contiguous) + (out, np.int64(first.size)) + tuple(scalars))
    return out


def leaky_relu_forward(x, negative_slope):
    return _pointwise("leaky_relu_forward", x, dict(x=x), (x.dtype.type(negative_slope),))


def leaky_relu_backward(dy, x, negative_slope):
    return _pointwise("leaky_relu_backward", dy, dict(dy=dy, x=x), (dy.dtype.type(negative_slope),))


def sigmoid_forward(x):
    return _pointwise("sigmoid_forward", x, dict(x=x))


def sigmoid_backward(dy, y):
    return _pointwise("sigmoid_backward", dy, dict(dy=dy, y=y))


def tanh_forward(x):
    return _pointwise("tanh_forward", x, dict(x=x))


def tanh_backward(dy, y):
    return _pointwise("tanh_backward", dy, dict(dy=dy, y=y))


def gelu_forward(x, approximate):
    return _pointwise("gelu_forward", x, dict(x=x), (np.int32(approximate == "tanh"),))


def gelu_backward(dy, x, approximate):
    return _pointwise("gelu_backward", dy, dict(dy=dy, x=x), (np.int32(approximate == "tanh"),))
