"""Dropout on device "cuda": launches of cuda_kernels/dropout.cu (see `gpucnn.backends`)."""
import numpy as np

from . import _kernels, launch

_kernels.declare("dropout.cu", {"dropout_apply": "{T}"})


def dropout_apply(x, seed, call, threshold, scale):
    """x * (scale where kept, else 0), the mask drawn as the NumPy backend draws it."""
    (xc,) = _kernels.inputs("dropout_apply", x=x)
    y = _kernels.empty(x.shape, x.dtype, like=x)
    _kernels.launch_kernel("dropout_apply", launch.elementwise((x.size + 3) // 4), x,
                           (xc, y, np.int64(x.size), np.uint64(seed), np.uint64(call), np.uint32(threshold),
                            x.dtype.type(scale)))
    return y
