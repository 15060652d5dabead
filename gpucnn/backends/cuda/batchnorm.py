"""Batch normalization on device "cuda": launches of cuda_kernels/batchnorm.cu (see
`gpucnn.backends`). Arrays are (N, C, S); per-channel arrays have C elements."""
import numpy as np

from . import _kernels, launch

_kernels.declare("batchnorm.cu", {
    "batch_norm_statistics": f"{{T}}, {launch.REDUCE_BLOCK}",
    "batch_norm_invstd": "{T}",
    "batch_norm_update_running": "{T}",
    "batch_norm_forward": "{T}",
    "batch_norm_backward_reduce": f"{{T}}, {launch.REDUCE_BLOCK}",
    "batch_norm_backward_data": "{T}",
})


def _per_channel_blocks(C):
    """One block of REDUCE_BLOCK threads per channel (grid-stride past MAX_GRID channels)."""
    return launch.Launch((min(C, launch.MAX_GRID),), (launch.REDUCE_BLOCK,)) if C else None


def _scalar(like, value):
    """value as the kernel's T parameter."""
    return like.dtype.type(value)


def _channels(op, C, **arrays):
    for name, a in arrays.items():
        _kernels.expect_shape(op, name, a, (C,))


def batch_norm_statistics(x):
    (xc,) = _kernels.inputs("batch_norm_statistics", x=x)
    N, C, S = x.shape
    mean, var = (_kernels.empty((C,), x.dtype, like=x) for _ in range(2))
    _kernels.launch_kernel("batch_norm_statistics", _per_channel_blocks(C), x, (xc, mean, var) + _kernels.ints(N, C, S))
    return mean, var


def batch_norm_invstd(var, eps):
    (varc,) = _kernels.inputs("batch_norm_invstd", var=var)
    invstd = _kernels.empty(var.shape, var.dtype, like=var)
    _kernels.launch_kernel("batch_norm_invstd", launch.elementwise(var.size), var,
                           (varc, invstd, _scalar(var, eps)) + _kernels.ints(var.size))
    return invstd


def batch_norm_update_running(running_mean, running_var, mean, var, factor, M):
    """In place, as the NumPy backend; the running arrays must be contiguous already."""
    _, _, meanc, varc = _kernels.inputs("batch_norm_update_running", running_mean=running_mean,
                                        running_var=running_var, mean=mean, var=var)
    C = running_mean.size
    _channels("batch_norm_update_running", C, running_var=running_var, mean=mean, var=var)
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        if not a.flags.c_contiguous:
            raise ValueError(f"batch_norm_update_running: {name} must be C-contiguous (it is updated in place)")
    _kernels.launch_kernel("batch_norm_update_running", launch.elementwise(C), mean,
                           (meanc, varc, running_mean, running_var, _scalar(mean, factor), np.int64(M))
                           + _kernels.ints(C))


def batch_norm_forward(x, mean, invstd, weight, bias):
    xc, meanc, invstdc, weightc, biasc = _kernels.inputs("batch_norm_forward", x=x, mean=mean, invstd=invstd,
                                                         weight=weight, bias=bias)
    N, C, S = x.shape
    _channels("batch_norm_forward", C, mean=mean, invstd=invstd, weight=weight, bias=bias)
    y = _kernels.empty(x.shape, x.dtype, like=x)
    _kernels.launch_kernel("batch_norm_forward", launch.elementwise(y.size), x,
                           (xc, meanc, invstdc, weightc, biasc, y) + _kernels.ints(N, C, S))
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    dyc, xc, meanc, invstdc = _kernels.inputs("batch_norm_backward_reduce", dy=dy, x=x, mean=mean, invstd=invstd)
    _kernels.expect_shape("batch_norm_backward_reduce", "dy", dy, x.shape)
    N, C, S = x.shape
    _channels("batch_norm_backward_reduce", C, mean=mean, invstd=invstd)
    dweight, dbias = (_kernels.empty((C,), x.dtype, like=x) for _ in range(2))
    _kernels.launch_kernel("batch_norm_backward_reduce", _per_channel_blocks(C), x,
                           (dyc, xc, meanc, invstdc, dweight, dbias) + _kernels.ints(N, C, S))
    return dweight, dbias


def batch_norm_backward_data(dy, x, mean, invstd, weight, dweight, dbias, batch_stats):
    arrays = _kernels.inputs("batch_norm_backward_data", dy=dy, x=x, mean=mean, invstd=invstd, weight=weight,
                             dweight=dweight, dbias=dbias)
    _kernels.expect_shape("batch_norm_backward_data", "dy", dy, x.shape)
    N, C, S = x.shape
    _channels("batch_norm_backward_data", C, mean=mean, invstd=invstd, weight=weight, dweight=dweight, dbias=dbias)
    dx = _kernels.empty(x.shape, x.dtype, like=x)
    _kernels.launch_kernel("batch_norm_backward_data", launch.elementwise(dx.size), x,
                           tuple(arrays) + (dx,) + _kernels.ints(N, C, S, int(batch_stats)))
    return dx
