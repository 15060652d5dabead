"""NumPy batch normalization over (N, C, S) arrays (see `gpucnn.backends` for the contract).

The per-channel sums accumulate in float64 (NumPy converts a float32 input in buffered
chunks, and adds pairwise along the contiguous axis), so the statistics of a large batch
keep float32's precision; the results are returned in the input's dtype.
"""
import numpy as np


def _per_channel(a):
    """The per-channel sum of an (N, C, S) array, in float64."""
    return a.sum(axis=(0, 2), dtype=np.float64)


def _count(x):
    return x.shape[0] * x.shape[2]


def batch_norm_statistics(x):
    """(mean, biased variance) per channel. The deviations are taken from the float-rounded
    mean and their own mean is subtracted again, so that rounding does not bias the variance."""
    M = _count(x)
    mean = (_per_channel(x) / M).astype(x.dtype)
    d = x - mean[:, None]
    shift = _per_channel(d) / M
    var = _per_channel(np.square(d, out=d)) / M - shift * shift
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
    y = x - mean[:, None]
    y *= (invstd * weight)[:, None]
    y += bias[:, None]
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    """(dweight, dbias) = (sum dy * xhat, sum dy) per channel."""
    xmu = x - mean[:, None]
    dweight = _per_channel(np.multiply(dy, xmu, out=xmu)) * invstd
    return dweight.astype(dy.dtype), _per_channel(dy).astype(dy.dtype)


def batch_norm_backward_data(dy, x, mean, invstd, weight, dweight, dbias, batch_stats):
    """weight * invstd * (dy - dbias/M - xhat * dweight/M) with batch statistics, else weight * invstd * dy."""
    scale = (weight * invstd)[:, None]
    if not batch_stats:
        return dy * scale
    M = _count(x)
    g = x - mean[:, None]
    g *= (invstd * (dweight / M))[:, None]
    np.subtract(dy, g, out=g)
    g -= (dbias / M)[:, None]
    g *= scale
    return g
