"""What the NumPy kernel families share: the threads, the scratch memory, BLAS's limit.

NumPy's copies and BLAS calls release the GIL, so work shared out over a few threads
(`set_num_threads`) runs truly in parallel.
"""
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Multiply-adds per output position from which a product's tiles go to the threads.
PARALLEL_MACS = 1 << 12
# Largest temporary kept from one call to the next (per thread, see `scratch`).
SCRATCH_BYTES = 1 << 25

_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool = None  # (threads, ThreadPoolExecutor), made on first use
_blas = None  # threadpoolctl's handle on the BLAS libraries, made on first use
_kept = threading.local()  # scratch buffers, by name


def get_num_threads():
    """How many threads share out a convolution's tiles (see set_num_threads)."""
    return _threads


def set_num_threads(n):
    """How many threads share out a convolution's tiles, as torch.set_num_threads.

    NumPy's copies and BLAS calls release the GIL, so tiles run truly in parallel. The
    default is the number of CPUs this process may run on.
    """
    global _threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: expected a positive number of threads, but got {n}")
    _threads = int(n)


def _executor():
    """The thread pool, made anew when the number of threads has changed."""
    global _pool
    if _pool is None or _pool[0] != _threads:
        if _pool is not None:
            _pool[1].shutdown(wait=False)
        _pool = (_threads, ThreadPoolExecutor(_threads, thread_name_prefix="gpucnn-cpu"))
    return _pool[1]


def scratch(name, shape, dtype, zero=False):
    """An array for one call's internal use, kept by the calling thread for its next call.

    Allocating such temporaries afresh every step costs a page fault per 4 KiB: the C
    library hands big freed blocks back to the OS. Only what no caller ever sees lives
    here, one buffer per name and thread, and none larger than SCRATCH_BYTES.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > SCRATCH_BYTES:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    buffer = getattr(_kept, name, None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = np.empty(nbytes, np.uint8)
        setattr(_kept, name, buffer)
    out = buffer[:nbytes].view(dtype).reshape(shape)
    if zero:
        out.fill(0)
    return out


def on_tiles(work, tiles, macs_per_position):
    """[work(tile) for tile in tiles], on `_threads` threads when the tiles are worth it.

    A thin product (few multiply-adds per output position: LeNet's layers) leaves a tile
    mostly copying memory, and two threads copying run no faster than one (measured on
    a 2-CPU VM: 10-50% slower), so those tiles stay on the calling thread. Meanwhile
    the threads keep the cores busy and BLAS runs single-threaded: its threads on top of
    ours would fight for the same cores (and OpenBLAS's spin while they wait), which
    made a convolution several times slower, not faster.
    """
    if _threads == 1 or len(tiles) == 1 or macs_per_position < PARALLEL_MACS:
        return [work(t) for t in tiles]
    with _single_threaded_blas():
        return list(_executor().map(work, tiles))


def _single_threaded_blas():
    """A context limiting NumPy's BLAS to one thread."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController  # finds the BLAS libraries: not at import
        _blas = ThreadpoolController().select(user_api="blas")
    return _blas.limit(limits=1)


def finite(dy):
    """Whether a multiply by a 0/1 mask selects exactly: np.where is many times slower
    here, but a NaN or inf times 0 is NaN, where PyTorch (and our kernels) give 0."""
    return bool(np.isfinite(dy).all())
