"""NumPy implementations of the kernel set (see `gpucnn.backends` for the contract).

Vectorized over batch, channels and pixels; the only Python loops run over kernel
offsets and over tiles of a convolution's output. A convolution gathers the input
windows of one tile of its output into an im2col matrix and multiplies with BLAS. A tile
is sized to stay in the CPU's cache, so the KH*KW-times-larger matrix of all windows
never exists; the tiles are shared out over a few threads (`set_num_threads`).
"""
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ..checks import output_size

# Bytes of im2col matrix per tile: what one core's share of L2 and L3 cache holds well.
TILE_BYTES = 1 << 21
# Multiply-adds per output position from which a convolution's tiles go to the threads.
PARALLEL_MACS = 1 << 12
# Largest temporary kept from one call to the next (per thread, see `_scratch`).
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


def _scratch(name, shape, dtype, zero=False):
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


def _pad(x, padding):
    """x zero-padded, in scratch memory: for the caller's own use within the call."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    out = _scratch("padded", (N, C, H + 2 * ph, W + 2 * pw), x.dtype, zero=True)
    out[:, :, ph : ph + H, pw : pw + W] = x
    return out


def _windows(x, kernel, stride):
    """View of x (N, C, H, W) as (N, C, OH, OW, KH, KW) windows, every stride-th one."""
    sh, sw = stride
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


class _WideIm2col:
    """The im2col matrix of x (N, C, H, W) as a view, its output positions on "wide" rows.

    Output (oh, ow) is numbered p = oh*R + ow with R*SW = SH*W: then its window starts at
    input pixel oh*SH*W + ow*SW = p*SW of the flattened image, so for each (c, ky, kx)
    the matrix row over all positions is a view of the image with a single stride, and
    a tile of it copies in long runs rather than OW-long pieces. Positions ow >= OW of
    each wide row (R - OW of them) are computed too and dropped.
    """

    def __init__(self, x, kernel, stride):
        (KH, KW), (sh, sw) = kernel, stride
        N, C, H, W = x.shape
        self.OH, self.OW = output_size(H, KH, sh, 0), output_size(W, KW, sw, 0)
        extra = -W % (sw // math.gcd(sh, sw)) if self.OH > 1 else 0
        if extra:  # R must be a whole number: zero columns on the right, which make no output
            x = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
            W = x.shape[3]
        x = np.ascontiguousarray(x)
        self.R = sh * W // sw if self.OH > 1 else self.OW
        P = (self.OH - 1) * self.R + self.OW  # up to the last real position: inside the image
        sN, sC, sH, sW = x.strides
        self.view = as_strided(x, (N, C, KH, KW, P), (sN, sC, sH, sW, sw * sW), writeable=False)
        self.dtype = x.dtype

    def tiles(self):
        """(samples, rows, columns) slices of the output, each one tile of about TILE_BYTES.

        Several whole samples when one fits; else some rows of one sample; else, for a row
        longer than several tiles (a long 1D signal), part of one row.
        """
        N, C, KH, KW, _ = self.view.shape
        row_bytes = C * KH * KW * self.R * self.dtype.itemsize
        OH, OW = self.OH, self.OW
        if row_bytes * OH <= TILE_BYTES:
            nb = TILE_BYTES // (row_bytes * OH)
            return [(slice(n, min(n + nb, N)), slice(0, OH), slice(0, OW)) for n in range(0, N, nb)]
        if row_bytes <= 4 * TILE_BYTES:
            rows = max(1, TILE_BYTES // row_bytes)
            return [(slice(n, n + 1), slice(r, min(r + rows, OH)), slice(0, OW))
                    for n in range(N) for r in range(0, OH, rows)]
        width = max(1, TILE_BYTES * self.R // row_bytes)
        return [(slice(n, n + 1), slice(r, r + 1), slice(c, min(c + width, OW)))
                for n in range(N) for r in range(OH) for c in range(0, OW, width)]

    def positions(self, tile):
        """The tile's span of wide positions, from its first to its last real one."""
        _, rows, cols = tile
        return slice(rows.start * self.R + cols.start, (rows.stop - 1) * self.R + cols.stop)

    def gather(self, tile):
        """The tile's im2col matrix, (samples, C*KH*KW, positions), in this thread's scratch memory."""
        view = self.view[tile[0], :, :, :, self.positions(tile)]
        part = _scratch("im2col", view.shape, self.dtype)
        np.copyto(part, view)
        return part.reshape(len(part), -1, part.shape[-1])

    def real(self, a, tile):
        """(samples, channels, wide positions) of a tile as a view of its (.., rows, columns)."""
        _, rows, cols = tile
        s0, s1, s2 = a.strides
        shape = a.shape[:2] + (rows.stop - rows.start, cols.stop - cols.start)
        return as_strided(a, shape, (s0, s1, self.R * s2, s2))


def _on_tiles(work, tiles, macs_per_position):
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


def _correlate(x, w, b, stride):
    """Valid cross-correlation (no padding) of x (N, C, H, W) with w (O, C, KH, KW), plus b."""
    O, _, KH, KW = w.shape
    im2col = _WideIm2col(x, (KH, KW), stride)
    y = np.empty((x.shape[0], O, im2col.OH, im2col.OW), dtype=np.result_type(x, w))
    w_mat = w.reshape(O, -1)

    def work(tile):
        n, rows, cols = tile
        out = np.matmul(w_mat, im2col.gather(tile))  # per sample (O, C*KH*KW) @ (C*KH*KW, positions)
        if b is not None:
            out += b[:, None]
        y[n, :, rows, cols] = im2col.real(out, tile)

    _on_tiles(work, im2col.tiles(), w.size)
    return y


def conv2d_forward(x, w, b, stride, padding):
    return _correlate(_pad(x, padding), w, b, stride)


def spread_to_stride1(dy, stride):
    """Put a stride-S gradient map back on the stride-1 grid, zeros in between (seed 002)."""
    sh, sw = stride
    if sh == 1 and sw == 1:
        return dy
    N, O, OH, OW = dy.shape
    out = np.zeros((N, O, (OH - 1) * sh + 1, (OW - 1) * sw + 1), dtype=dy.dtype)
    out[:, :, ::sh, ::sw] = dy
    return out


def rot180(w):
    """The filter turned by 180 degrees in its two spatial axes (seed 003)."""
    return w[..., ::-1, ::-1]


def conv2d_backward_data(dy, w, x_shape, stride, padding):
    """dL/dx as the seeds derive it: a "full" convolution of dy with rot180(w).

    The stride-S gradient is first spread onto the stride-1 grid; zero-padding it by
    K - 1 on each side makes the correlation with the rotated filter "full". Channel c
    of dx takes channel c of every filter, summed over the filters (seed 002), which is
    a stride-1 convolution with the filter's in/out axes swapped. Of the full result only
    the H x W inside the layer's own padding P is dx, so only the windows that produce it
    are computed: those on rows and columns P .. P+H+K-2 of the padded gradient.
    """
    N, C, H, W = x_shape
    KH, KW = w.shape[2:]
    full = spread_to_stride1(dy, stride)
    padded = _scratch("full", (N, full.shape[1], H + KH - 1, W + KW - 1), dy.dtype, zero=True)
    # Row i of `full` is row i + K-1 of the K-1-padded gradient, row i + K-1-P of its
    # part from row P on; rows that land outside are ones no window of dx reaches.
    # Rows and columns of x that no window reached (when (H + 2P - K) % S != 0) stay 0.
    (top, left) = (KH - 1 - padding[0], KW - 1 - padding[1])
    src = full[:, :, max(0, -top) :, max(0, -left) :]
    dst = padded[:, :, max(0, top) :, max(0, left) :]
    rows, cols = min(src.shape[2], dst.shape[2]), min(src.shape[3], dst.shape[3])
    dst[:, :, :rows, :cols] = src[:, :, :rows, :cols]
    w_t = np.ascontiguousarray(rot180(w).transpose(1, 0, 2, 3))  # (C, O, KH, KW)
    return _correlate(padded, w_t, None, (1, 1))


def conv2d_backward_weight(x, dy, w_shape, stride, padding):
    """dL/dw: the layer's input correlated with dy, summed over batch and positions."""
    O = w_shape[0]
    im2col = _WideIm2col(_pad(x, padding), w_shape[2:], stride)

    def work(tile):
        n, rows, cols = tile
        windows = im2col.gather(tile)
        # The tile of dy on the same wide positions, zero on the dropped ones, channels
        # last: the product then reads both matrices along their rows, as BLAS likes.
        dy_t = np.zeros((windows.shape[0], windows.shape[2], O), dtype=dy.dtype)
        im2col.real(dy_t.transpose(0, 2, 1), tile)[...] = dy[n, :, rows, cols]
        # per sample (C*KH*KW, positions) @ (positions, O), summed over the samples
        return np.matmul(windows, dy_t).sum(axis=0)

    dw_t = sum(_on_tiles(work, im2col.tiles(), math.prod(w_shape)))  # (C*KH*KW, O)
    return np.ascontiguousarray(dw_t.T, dtype=np.result_type(x, dy)).reshape(w_shape)


def conv2d_backward_bias(dy):
    N, O = dy.shape[:2]
    return dy.reshape(N, O, -1).sum(axis=2).sum(axis=0)


def _strided_slot(kernel_offset, stride, out_size):
    """Slice of input positions that kernel offset k touches in each of the output windows."""
    return slice(kernel_offset, kernel_offset + stride * (out_size - 1) + 1, stride)


def _offsets(x_shape, kernel, stride):
    """(k, slots) for each in-window offset k = ky*KW+kx: the input pixels it covers, window by window."""
    KH, KW = kernel
    OH, OW = (output_size(s, k, st, 0) for s, k, st in zip(x_shape[2:], kernel, stride))
    for ky in range(KH):
        for kx in range(KW):
            yield ky * KW + kx, (slice(None), slice(None), _strided_slot(ky, stride[0], OH), _strided_slot(kx, stride[1], OW))


def max_pool2d_forward(x, kernel, stride):
    """Max over each window; argmax is the in-window index ky*KW+kx of the first maximum.

    Whole-array passes, one per window offset: the max first, then the argmax as the
    number of leading offsets that do not hold it, so the first maximum wins ties. NaN
    propagates through np.maximum; a window whose max is NaN matches none of its values
    and gets the index of its first NaN, as np.argmax would give.
    """
    slots = [s for _, s in _offsets(x.shape, kernel, stride)]
    y = x[slots[0]].copy()
    for s in slots[1:]:
        np.maximum(y, x[s], out=y)
    argmax = np.zeros(y.shape, dtype=np.int32)
    missed = np.not_equal(x[slots[0]], y)
    for s in slots[1:]:
        argmax += missed
        missed &= np.not_equal(x[s], y)
    if missed.any():
        windows = _windows(x, kernel, stride)[missed]
        argmax[missed] = np.isnan(windows.reshape(len(windows), -1)).argmax(axis=1)
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride):
    """Route each window's gradient to its argmax; overlapping windows add up (seeds 001-003)."""
    dx = np.zeros(x_shape, dtype=dy.dtype)
    overlapping = any(s < k for s, k in zip(stride, kernel))
    masks_multiply = _finite(dy)
    for k, slots in _offsets(x_shape, kernel, stride):
        chosen = argmax == k
        if masks_multiply and not overlapping:
            np.multiply(dy, chosen, out=dx[slots])
        elif masks_multiply:
            dx[slots] += dy * chosen
        else:
            np.add(dx[slots], dy, out=dx[slots], where=chosen)
    return dx


def avg_pool2d_forward(x, kernel, stride):
    return _windows(x, kernel, stride).mean(axis=(-2, -1))


def avg_pool2d_backward(dy, x_shape, kernel, stride):
    """Split each window's gradient evenly over its KH*KW inputs."""
    share = dy / (kernel[0] * kernel[1])
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for _, slots in _offsets(x_shape, kernel, stride):
        dx[slots] += share
    return dx


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dy, y):
    """dy where y > 0, else 0."""
    if _finite(dy):
        return dy * (y > 0)
    return np.where(y > 0, dy, 0).astype(dy.dtype, copy=False)


def _finite(dy):
    """Whether a multiply by a 0/1 mask selects exactly: np.where is many times slower
    here, but a NaN or inf times 0 is NaN, where PyTorch (and our kernels) give 0."""
    return bool(np.isfinite(dy).all())
