"""What the NumPy kernel families share: the threads, the scratch memory, BLAS's limit.

NumPy's copies and BLAS calls release the GIL, so work shared out over a few threads
(`set_num_threads`) runs truly in parallel.
"""
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
from numpy.lib.stride_tricks import as_strided

# Multiply-adds per output position from which a product is thick: alone, it goes to BLAS's
# own threads (`on_tiles`), and conv.py may multiply it over a whole tile of samples at once
# (`_per_sample`).
PARALLEL_MACS = 1 << 12
# Largest temporary kept from one call to the next (per thread, see `scratch`).
SCRATCH_BYTES = 1 << 25
# Bytes per chunk of a memory-bound op (max pooling, depthwise layers, ReLU): the passes of
# a pooling go over a chunk together while a core's L2 cache (1-2 MiB) holds it and its
# temporaries, and the chunks are what the threads share out. Measured on one core: a 3x3/2
# max pooling of 32x64x112x112 took 384 ms in whole-array passes, 150 ms in 1 MiB chunks
# (VGG's 2x2 of 128x64x32x32: 30 and 20 ms), where each pass ran from memory and faulted in
# fresh pages. On two threads (`share_out`, LeNet at batch 512, interleaved with one thread's
# chunks in one process), its first max pooling ran 1.2x faster forward, 1.25x backward, its
# ReLU 1.2x and 1.35x.
CHUNK_BYTES = 1 << 20

_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool = None  # (threads, ThreadPoolExecutor of the helpers), made on first use
_blas = None  # threadpoolctl's handle on the BLAS libraries, made on first use
_kept = threading.local()  # scratch buffers, by name
_sharing = threading.local()  # .on while this thread works on a share_out's items


def get_num_threads():
    """How many threads share out the NumPy path's work (see set_num_threads)."""
    return _threads


def set_num_threads(n):
    """How many threads share out the NumPy path's work, as torch.set_num_threads: the tiles
    of a convolution, the chunks of max pooling, ReLU and depthwise layers, BatchNorm's
    blocks (`share_out`). Results are the same bits on any number.

    NumPy's copies and BLAS calls release the GIL, so they run truly in parallel. The
    default is the number of CPUs this process may run on.
    """
    global _threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: expected a positive number of threads, but got {n}")
    _threads = int(n)


def _executor():
    """The pool of helper threads (`_threads` - 1 of them: the calling thread is the other),
    made anew when the number of threads has changed."""
    global _pool
    if _pool is None or _pool[0] != _threads:
        if _pool is not None:
            _pool[1].shutdown(wait=False)
        _pool = (_threads, ThreadPoolExecutor(_threads - 1, thread_name_prefix="gpucnn-cpu"))
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


def share_out(work, items):
    """[work(item) for item in items], the calling thread and `_threads` - 1 pool threads
    each taking the next item until none is left.

    The calling thread works too, from the start: a sleeping thread takes 0.3-0.5 ms to
    wake on this VM (its idle vCPU halts), and LeNet's layers ran no faster on two threads
    than on one (73 against 66 ms a step at batch 512) while the caller waited for the pool
    to wake, do every item, and wake it again. Now the helpers join as they wake, and
    the caller sleeps only for the last items in flight (55 ms).

    An item's work that shares out again runs its items on its own thread: a pool thread
    waiting for a helper queued behind itself would wait forever.
    """
    if _threads == 1 or len(items) <= 1 or getattr(_sharing, "on", False):
        return [work(item) for item in items]
    results = [None] * len(items)
    order, lock, failed = iter(range(len(items))), threading.Lock(), []

    def drain():
        _sharing.on = True
        try:
            while not failed:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                try:
                    results[i] = work(items[i])
                except BaseException:
                    failed.append(i)  # the others stop taking items
                    raise
        finally:
            _sharing.on = False

    helpers = [_executor().submit(drain) for _ in range(min(_threads, len(items)) - 1)]
    try:
        drain()
    finally:
        wait(helpers)  # they write into the caller's arrays: never return while one runs
    for h in helpers:
        h.result()  # a helper's exception, raised here
    return results


def on_tiles(work, tiles, macs_per_position):
    """[work(tile) for tile in tiles], shared out over `_threads` threads (`share_out`).

    The threads keep the cores busy and BLAS runs single-threaded inside each tile: its
    threads on top of ours would fight for the same cores (and OpenBLAS's spin while they
    wait), which made a convolution several times slower, not faster. Thin tiles (few
    multiply-adds per output position: LeNet's layers) too: their many small products each
    woke BLAS's sleeping threads, which made LeNet's step at batch 512 on two threads 5x
    slower (968 against 184 ms) once idle threads sleep (OPENBLAS_THREAD_TIMEOUT=4, the
    bench's setting). Only a single thick product is left to BLAS's own threads.
    """
    if macs_per_position >= PARALLEL_MACS and len(tiles) == 1:  # BLAS's own threads share it out
        return [work(tiles[0])]
    with single_threaded_blas():
        return share_out(work, tiles)


def chunks(count, item_bytes):
    """Slices of `count` items of `item_bytes` each (float32), about CHUNK_BYTES a slice."""
    step = max(1, CHUNK_BYTES // max(1, item_bytes))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def elementwise(op, out, *arrays):
    """op(*chunks, out=chunk of out) over the arrays (out's shape) taken flat, chunk by chunk
    (`chunks`), shared out (`share_out`); returns out."""
    flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    target = out.reshape(-1)
    share_out(lambda s: op(*(a[s] for a in flat), out=target[s]), chunks(target.size, target.itemsize))
    return out


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
