"""NumPy batch normalization over (N, C, S) arrays (see `gpucnn.backends` for the contract).

Per-channel sums add each (n, c) row of S contiguous values as a BLAS matrix-vector product
with a vector of ones (one pass, however short the rows; BLAS keeps several interleaved
partial sums per row), then the N row sums in float64: a large batch keeps its precision
without converting the whole array. The
statistics take deviations from the rounded mean and subtract their own mean again, so a
channel far from 0 relative to its spread loses nothing to cancellation.

The elementwise passes run over blocks of samples of about BLOCK_BYTES, so that the
several passes an op makes over a block find it in cache: memory sees each input read
once or twice and each output written once. The threads share the blocks out (`_by_blocks`);
each block's results go to its own rows, so the sums come out the same on any number of
threads. Temporaries live in per-thread scratch memory (`_common.scratch`), as a fresh
array per pass would cost a page fault per 4 KiB.
"""
import numpy as np

from ._common import scratch, share_out, single_threaded_blas

# Bytes per block: a core's L2 cache. Measured on one core, forward and backward of ResNet-20's
# layers at batch 128 took 9.0, 3.6 and 2.0 ms in 1 MiB blocks against 9.1, 4.1 and 2.2 in 256 KiB.
BLOCK_BYTES = 1 << 20
# Arrays from which the threads share the blocks out. On two threads, in 1 MiB blocks: 128x16x32x32
# (8 MiB) 7.6 ms against 9.0 on one; 32x64x112x112 63 against 81; but 128x32x16x16 (4 MiB) 4.5
# against 3.6, where waking the pool and trading the GIL cost more than the second core gives.
SHARED_BYTES = 1 << 23


def _blocks(x):
    """Slices of x's samples, each of about BLOCK_BYTES (at least one sample)."""
    N = x.shape[0]
    per_block = max(1, BLOCK_BYTES // max(1, x[:1].nbytes))
    return [slice(n, min(n + per_block, N)) for n in range(0, N, per_block)]


def _by_blocks(work, x):
    """work(block) for each of x's blocks, shared out over the threads, with BLAS (the row
    sums) single-threaded inside each: its own threads would fight ours for the cores."""
    with single_threaded_blas():
        if x.nbytes < SHARED_BYTES:
            for block in _blocks(x):
                work(block)
        else:
            share_out(work, _blocks(x))


def _count(x):
    return x.shape[0] * x.shape[2]


def _row_sums(a, out):
    """out (N, C) = the sums of an (N, C, S) array's rows."""
    N, C, S = a.shape
    out[...] = (a.reshape(N * C, S) @ np.ones(S, a.dtype)).reshape(N, C)


def _all_row_sums(a):
    """The (N, C) sums of an (N, C, S) array's rows, block by block."""
    rows = np.empty(a.shape[:2], a.dtype)
    _by_blocks(lambda block: _row_sums(a[block], rows[block]), a)
    return rows


def _channel_sums(row_sums):
    """Per-channel totals, in float64, of (N, C) row sums."""
    return row_sums.sum(axis=0, dtype=np.float64)


def _centered(x, mean, block):
    """x[block] - mean per channel, in scratch memory."""
    part = x[block]
    return np.subtract(part, mean[:, None], out=scratch("batch_norm_centered", part.shape, x.dtype))


def batch_norm_statistics(x):
    """(mean, biased variance) per channel, in x's dtype."""
    M = _count(x)
    mean = (_channel_sums(_all_row_sums(x)) / M).astype(x.dtype)
    shift_rows, square_rows = np.empty(x.shape[:2], x.dtype), np.empty(x.shape[:2], x.dtype)

    def deviations(block):
        d = _centered(x, mean, block)
        _row_sums(d, shift_rows[block])
        _row_sums(np.square(d, out=d), square_rows[block])

    _by_blocks(deviations, x)
    shift = _channel_sums(shift_rows) / M
    var = _channel_sums(square_rows) / M - shift * shift
    return (mean + shift).astype(x.dtype), var.astype(x.dtype)


def batch_norm_invstd(var, eps):
    return 1 / np.sqrt(var + var.dtype.type(eps))


def batch_norm_update_running(running_mean, running_var, mean, var, factor, M):
    """In place: r = (1 - factor) r + factor b, the batch's variance made unbiased (x M/(M-1))."""
    factor = running_mean.dtype.type(factor)
    keep = 1 - factor
    running_mean[...] = factor * mean + keep * running_mean
    running_var[...] = factor * (var * running_var.dtype.type(M / (M - 1))) + keep * running_var


def batch_norm_forward(x, mean, invstd, weight, bias):
    scale, shift = (invstd * weight)[:, None], bias[:, None]
    y = np.empty_like(x)

    def normalize(block):
        out = np.subtract(x[block], mean[:, None], out=y[block])
        out *= scale
        out += shift

    _by_blocks(normalize, x)
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    """(dweight, dbias) = (sum dy * xhat, sum dy) per channel."""
    product_rows, dy_rows = np.empty(x.shape[:2], x.dtype), np.empty(dy.shape[:2], dy.dtype)

    def reduce(block):
        product = _centered(x, mean, block)
        product *= dy[block]
        _row_sums(product, product_rows[block])
        _row_sums(dy[block], dy_rows[block])

    _by_blocks(reduce, x)
    dweight = _channel_sums(product_rows) * invstd
    return dweight.astype(dy.dtype), _channel_sums(dy_rows).astype(dy.dtype)


def batch_norm_backward_data(dy, x, mean, invstd, weight, dweight, dbias, batch_stats):
    """weight * invstd * (dy - dbias/M - xhat * dweight/M) with batch statistics, else weight * invstd * dy."""
    scale = (weight * invstd)[:, None]
    if not batch_stats:
        return dy * scale
    M = _count(x)
    xhat_scale = -(scale[:, 0] * invstd * (dweight / M))[:, None]
    shift = -(scale[:, 0] * (dbias / M))[:, None]
    dx = np.empty_like(dy)

    def gradient(block):
        out = np.subtract(x[block], mean[:, None], out=dx[block])
        out *= xhat_scale
        out += np.multiply(dy[block], scale, out=scratch("batch_norm_dy_scaled", out.shape, dy.dtype))
        out += shift

    _by_blocks(gradient, x)
    return dx
