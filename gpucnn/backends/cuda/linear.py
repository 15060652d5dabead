"""Linear's matrix products on device "cuda": cuBLAS through CuPy's matmul, with TF32 tensor
cores for float32 where set_float32_matmul_precision("high") allows them.

CuPy chooses a float32 GEMM's cuBLAS compute type by a process-wide switch,
cupy._core._routines_linalg.set_compute_type(dtype, compute_type), whose default (read the
first time) is COMPUTE_TYPE_DEFAULT, or COMPUTE_TYPE_TF32 when the environment variable
CUPY_TF32 is 1. Allowed TF32, each product sets it to COMPUTE_TYPE_TF32 for float32 and puts
back what it found (CuPy's default, resolved by that read, or the user's own setting), so the
user's other CuPy code runs as CuPy would have run it; only another thread's CuPy product
issued during ours could see the switch on. Not allowed TF32 ("highest", float64, or a GPU
before sm_80, which has no TF32), the switch is left alone: CuPy's own setting, which
CUPY_TF32=1 may already have made TF32, as PyTorch's matmul follows its own global flag.
CuPy applies the switch to 2-D products only (its batched matmul ignores it): Linear
multiplies 2-D views.

On the emulator the products stay NumPy's float32 matmul under either precision: which
cuBLAS kernels use tensor cores for a shape, and how they round and add, is unspecified, so
there are no bits to emulate (unlike our convolution kernels, whose TF32 rounding the
emulator runs).
"""
from ... import cuda
from .conv import tensor_cores


def matmul(a, b):
    if isinstance(a, cuda.EmulatedDeviceArray) or not tensor_cores(a):
        return a @ b
    from cupy._core import _routines_linalg as linalg
    before = linalg.get_compute_type(a.dtype)
    linalg.set_compute_type(a.dtype, linalg.COMPUTE_TYPE_TF32)
    try:
        return a @ b
    finally:
        linalg.set_compute_type(a.dtype, before)
