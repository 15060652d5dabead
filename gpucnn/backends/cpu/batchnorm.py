"""NumPy batch normalization over (N, C, S) arrays (see `gpucnn.backends` for the contract).

Per-channel sums add each (n, c) row of S contiguous values as a BLAS matrix-vector product
with a vector of ones (one pass, however short the rows; BLAS keeps several interleaved
partial sums per row), then the N row sums in float64: a large batch keeps its precision
without converting the whole array. The
statistics take deviations from the rounded mean and subtract their own mean again, so a
channel far from 0 relative to its spread loses nothing to cancellation.

The elementwise passes run over blocks of samples of about BLOCK_BYTES, so that the
several passes an op makes over a block find it in cache: memory sees each input read
once or twice and each output written once. Temporaries live in per-thread scratch memory
(`_common.scratch`), as a fresh array per pass would cost a page fault per 4 KiB.
"""
import numpy as np

from ._common import scratch

BLOCK_BYTES = 1 << 18  # about a core's share of L2 cache


def _blocks(x):
    """Slices of x's samples, each of about BLOCK_BYTES (at least one sample)."""
    N = x.shape[0]
    per_block = max(1, BLOCK_BYTES // max(1, x[:1].nbytes))
    return [slice(n, min(n + per_block, N)) for n in range(0, N, per_block)]


def _count(x):
    return x.shape[0] * x.shape[2]


def _row_sums(a, out=None):
    """The (N, C) sums of an (N, C, S) array's rows."""
    N, C, S = a.shape
    sums = a.reshape(N * C, S) @ np.ones(S, a.dtype)
    if out is None:
        return sums.reshape(N, C)
    out[...] = sums.reshape(N, C)
    return out


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
    mean = (_channel_sums(_row_sums(x)) / M).astype(x.dtype)
    shift_rows, square_rows = np.empty(x.shape[:2], x.dtype), np.empty(x.shape[:2], x.dtype)
    for block in _blocks(x):
        d = _centered(x, mean, block)
        _row_sums(d, out=shift_rows[block])
        _row_sums(np.square(d, out=d), out=square_rows[block])
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
    for block in _blocks(x):
        out = np.subtract(x[block], mean[:, None], out=y[block])
        out *= scale
        out += shift
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    """(dweight, dbias) = (sum dy * xhat, sum dy) per channel."""
    product_rows = np.empty(x.shape[:2], x.dtype)
    for block in _blocks(x):
        product = _centered(x, mean, block)
        product *= dy[block]
        _row_sums(product, out=product_rows[block])
    dweight = _channel_sums(product_rows) * invstd
    return dweight.astype(dy.dtype), _channel_sums(_row_sums(dy)).astype(dy.dtype)


def batch_norm_backward_data(dy, x, mean, invstd, weight, dweight, dbias, batch_stats):
    """weight * invstd * (dy - dbias/M - xhat * dweight/M) with batch statistics, else weight * invstd * dy."""
    scale = (weight * invstd)[:, None]
    if not batch_stats:
        return dy * scale
    M = _count(x)
    xhat_scale = -(scale[:, 0] * invstd * (dweight / M))[:, None]
    shift = -(scale[:, 0] * (dbias / M))[:, None]
    dx = np.empty_like(dy)
    for block in _blocks(x):
        out = np.subtract(x[block], mean[:, None], out=dx[block])
        out *= xhat_scale
        out += np.multiply(dy[block], scale, out=scratch("batch_norm_dy_scaled", out.shape, dy.dtype))
        out += shift
    return dx
