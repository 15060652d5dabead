"""Linear's matrix products on device "cpu": NumPy's matmul (BLAS), in float32 or float64 as
given; no CPU BLAS computes in TF32, so the precision setting changes nothing here.

A small product runs on one BLAS thread: handing part of it to a second thread costs a
wake-up (the bench lets idle threads sleep, OPENBLAS_THREAD_TIMEOUT=4) and, on a busy
machine, a wait for a time slice, more than the half it saves. LeNet's 400 -> 120 layer at
batch 512 (25 M multiply-adds) took 8 ms on two BLAS threads against 1.1 ms on one.
"""
import math

from ._common import single_threaded_blas

# Multiply-adds below which a product stays on one BLAS thread.
SMALL_MACS = 1 << 26


def matmul(a, b):
    if math.prod(a.shape) * b.shape[-1] >= SMALL_MACS:
        return a @ b
    with single_threaded_blas():
        return a @ b
