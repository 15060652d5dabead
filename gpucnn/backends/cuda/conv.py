"""Convolution on device "cuda": launches of cuda_kernels/conv2d.cu and, for TF32, conv2d_tf32.cu
(see `gpucnn.backends`)."""
from collections import namedtuple

import numpy as np

from ... import checks, cuda, precision
from . import _kernels, launch

_kernels.declare("conv2d.cu", {
    "conv2d_forward": "{T}, {tile}",
    "conv2d_backward_data_full_rot180": "{T}, {tile}",
    "conv2d_backward_weight": "{T}, {tile}",
    "add_partial_sums": f"{{T}}, {launch.ELEMENTWISE_BLOCK}",
    "conv2d_backward_bias": f"{{T}}, {launch.REDUCE_BLOCK}",
})
# The same passes on TF32 tensor cores, for float32 under set_float32_matmul_precision("high"):
# a module of their own, so that a failure to build it never takes the strict kernels with it.
_kernels.declare("conv2d_tf32.cu", {
    "conv2d_forward_tf32": "{tf32_tile}",
    "conv2d_backward_data_full_rot180_tf32": "{tf32_tile}",
    "conv2d_backward_weight_tf32": "{tf32_tile}",
})


class ConvGeometry(namedtuple("ConvGeometry", "N C H W O KH KW OH OW SH SW PH PW DH DW G")):
    """A convolution's sizes: conv2d.cu's int parameters, in their order. C and O count all
    channels; the weight has C/G input channels per filter."""

    @property
    def y_shape(self):
        return (self.N, self.O, self.OH, self.OW)


def tensor_cores(like):
    """Whether float32 products on like's device run in TF32: allowed by the precision
    setting, and a GPU of compute capability 8.0 or later (the emulator runs them anywhere)."""
    if like.dtype != np.float32 or not precision.tf32_allowed():
        return False
    if isinstance(like, cuda.EmulatedDeviceArray):
        return True
    import cupy
    return int(cupy.cuda.Device().compute_capability) >= 80


def _gemm_kernel(name, tf32):
    return name + "_tf32" if tf32 else name


def _conv_geometry(op, x_shape, w_shape, stride, padding, dilation, groups):
    N, C, H, W = x_shape
    O, CW, KH, KW = w_shape
    # A raw kernel would read past the end of w, or of a group's channels.
    if groups < 1 or C % groups or O % groups:
        raise ValueError(f"{op}: groups={groups} must be positive and divide both {C} input and {O} output channels")
    if CW * groups != C:
        raise ValueError(f"{op}: weight of shape {tuple(w_shape)} has {CW} input channels per group, "
                         f"but x has {C} channels in {groups} groups")
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    OH, OW = checks.output_size(H, KH, SH, PH, DH), checks.output_size(W, KW, SW, PW, DW)
    return ConvGeometry(N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, groups)


def conv2d_forward(x, w, b, stride, padding, dilation=(1, 1), groups=1):
    if b is None:
        b = cuda.get_array_module(w).zeros(w.shape[0], dtype=w.dtype)
    xc, wc, bc = _kernels.inputs("conv2d_forward", x=x, weight=w, bias=b)
    g = _conv_geometry("conv2d_forward", x.shape, w.shape, stride, padding, dilation, groups)
    _kernels.expect_shape("conv2d_forward", "bias", b, (g.O,))
    y = _kernels.empty(g.y_shape, x.dtype, like=x)
    tf32 = tensor_cores(x)
    _kernels.launch_kernel(_gemm_kernel("conv2d_forward", tf32), launch.conv2d_forward(*g.y_shape, groups, tf32), x,
                           (xc, wc, bc, y) + _kernels.ints(*g))
    return y


def conv2d_backward_data(dy, w, x_shape, stride, padding, dilation=(1, 1), groups=1):
    dyc, wc = _kernels.inputs("conv2d_backward_data", dy=dy, weight=w)
    g = _conv_geometry("conv2d_backward_data", x_shape, w.shape, stride, padding, dilation, groups)
    _kernels.expect_shape("conv2d_backward_data", "dy", dy, g.y_shape)
    dx = _kernels.empty(x_shape, dy.dtype, like=dy)
    tf32 = tensor_cores(dy)
    phases = launch.conv2d_backward_data(g.N, g.C, g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW, g.G,
                                         tf32)
    if any(config is None for _, _, config in phases):  # pixels no launch writes: no tap reaches them
        dx.fill(0)
    for ph, pw, config in phases:  # each writes its own pixels of dx
        _kernels.launch_kernel(_gemm_kernel("conv2d_backward_data_full_rot180", tf32), config, dy,
                               (dyc, wc, dx) + _kernels.ints(*g, *ph, *pw))
    return dx


def conv2d_backward_weight(x, dy, w_shape, stride, padding, dilation=(1, 1), groups=1):
    xc, dyc = _kernels.inputs("conv2d_backward_weight", x=x, dy=dy)
    w_shape = tuple(w_shape)
    g = _conv_geometry("conv2d_backward_weight", x.shape, w_shape, stride, padding, dilation, groups)
    _kernels.expect_shape("conv2d_backward_weight", "dy", dy, g.y_shape)
    dw = _kernels.empty(w_shape, x.dtype, like=x)
    chunk, chunks = launch.weight_gradient_chunks(*w_shape, g.N * g.OH * g.OW, groups)
    partials = dw if chunks == 1 else _kernels.empty((chunks,) + w_shape, x.dtype, like=x)
    tf32 = tensor_cores(x)
    _kernels.launch_kernel(_gemm_kernel("conv2d_backward_weight", tf32),
                           launch.conv2d_backward_weight(*w_shape, chunks, groups, tf32), x,
                           (xc, dyc, partials) + _kernels.ints(*g) + (np.int64(chunk), np.int32(chunks)))
    if chunks > 1:
        _kernels.launch_kernel("add_partial_sums", launch.elementwise(dw.size), x,
                               (partials, dw, np.int32(chunks), np.int64(dw.size)))
    return dw


def conv2d_backward_bias(dy):
    (dyc,) = _kernels.inputs("conv2d_backward_bias", dy=dy)
    N, O, OH, OW = dy.shape
    db = _kernels.empty((O,), dy.dtype, like=dy)
    chunk, chunks = launch.bias_gradient_chunks(O, N * OH * OW)
    partials = db if chunks == 1 else _kernels.empty((chunks, O), dy.dtype, like=dy)
    _kernels.launch_kernel("conv2d_backward_bias", launch.conv2d_backward_bias(O, chunks), dy,
                           (dyc, partials) + _kernels.ints(N, O, OH, OW) + (np.int64(chunk), np.int32(chunks)))
    if chunks > 1:
        _kernels.launch_kernel("add_partial_sums", launch.elementwise(O), dy,
                               (partials, db, np.int32(chunks), np.int64(O)))
    return db
