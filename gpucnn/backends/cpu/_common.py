"""What the NumPy kernel families share: the threads, the scratch memory, BLAS's limit.

NumPy's copies and BLAS calls release the GIL, so work shared out over a few threads
(`set_num_threads`) runs truly in parallel.
"""
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import as_strided

# Multiply-adds per output position from which a product is thick: alone, it goes to BLAS's
# own threads (`on_tiles`), and conv.py may multiply it over a whole tile of samples at once
# (`_per_sample`).
PARALLEL_MACS = 1 << 12
# Largest temporary kept from one call to the next (per thread, see `scratch`).
SCRATCH_BYTES = 1 << 25
# Bytes of float32 input per chunk of a memory-bound op (max pooling, depthwise layers) that
# its passes go over together (`chunks`): a core's L2 cache (1-2 MiB) holds a chunk and its
# temporaries. Measured on one core: a 3x3/2 max pooling of 32x64x112x112 took 384 ms in
# whole-array passes, 150 ms in 1 MiB chunks (VGG's 2x2 of 128x64x32x32: 30 and 20 ms),
# where each pass ran from memory and faulted in fresh pages; ReLU's one or two passes gained
# nothing, and go whole. The chunks stay on the calling thread: shared out over two (quiet
# machine, load 1.2-1.5), ReLU and LeNet's 2x2 max pooling ran 0.7-0.9x as fast, the scatter
# of max pooling's backward 0.9x; only a 3x3 pooling's forward gained (1.35x).
CHUNK_BYTES = 1 << 20
# Multiply-adds per output position from which a product's tiles go to the threads. Measured
# on two threads against one (quiet machine), LeNet's layers at batch 512: conv2 (2400 per
# position) 1.32-1.44x faster in each pass, conv1's forward (150) 0.72x.
THREAD_MACS = 1 << 10

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
    """[work(tile) for tile in tiles], shared out over `_threads` threads when worth it.

    The threads keep the cores busy and BLAS runs single-threaded inside each tile: its
    threads on top of ours would fight for the same cores (and OpenBLAS's spin while they
    wait), which made a convolution several times slower, not faster. Thin tiles (few
    multiply-adds per output position: LeNet's layers) too: their many small products each
    woke BLAS's sleeping threads, which made LeNet's step at batch 512 on two threads 5x
    slower (968 against 184 ms) once idle threads sleep (OPENBLAS_THREAD_TIMEOUT=4, the
    bench's setting). A tile with few multiply-adds per position is mostly copying memory,
    which runs no faster on two threads than on one (THREAD_MACS): those stay on the calling
    thread. Only a single thick product is left to BLAS's own threads.
    """
    if macs_per_position >= PARALLEL_MACS and len(tiles) == 1:  # BLAS's own threads share it out
        return [work(tiles[0])]
    with single_threaded_blas():
        if _threads == 1 or len(tiles) == 1 or macs_per_position < THREAD_MACS:
            return [work(t) for t in tiles]
        return list(_executor().map(work, tiles))


def chunks(count, item_bytes):
    """Slices of `count` items of `item_bytes` each (float32), about CHUNK_BYTES a slice."""
    step = max(1, CHUNK_BYTES // max(1, item_bytes))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def rows_of(a, rows, cols, width):
    """Positions a (..., p) numbered p = row*width + column, as the view (..., rows, cols):
    the outputs of the wide rows (`conv._Im2col`) that a tap's shift reaches in one run,
    the width - cols positions past each row's end left out."""
    step = a.strides[-1]
    return as_strided(a, a.shape[:-1] + (rows, cols), a.strides[:-1] + (width * step, step))


def single_threaded_blas():
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
