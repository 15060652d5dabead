"""NumPy dropout with the CUDA kernel's mask (see cuda_kernels/dropout.cu): Philox4x32-10,
vectorized over the elements' groups of four, in uint64 arithmetic for the 32x32->64-bit
products."""
import numpy as np

_LOW32 = np.uint64(0xFFFFFFFF)
_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_WEYL = (0x9E3779B9, 0xBB67AE85)


def philox4x32_10(counter, key):
    """Random123's Philox4x32-10: counter, four uint32 values or arrays (broadcast together),
    and key, two ints below 2^32, to four uint32 arrays."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = key
    for round in range(10):
        if round:
            k0, k1 = (k0 + _WEYL[0]) & 0xFFFFFFFF, (k1 + _WEYL[1]) & 0xFFFFFFFF
        p0, p1 = _MULTIPLIERS[0] * c0, _MULTIPLIERS[1] * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & _LOW32, \
            (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & _LOW32
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def dropout_keep(n, seed, call, threshold):
    """The kept elements (bool, flat) of a call: word i % 4 of the block for counter
    (i/4, call), keyed by seed, with its top 24 bits at or above threshold."""
    group = np.arange((n + 3) // 4, dtype=np.uint64)
    words = philox4x32_10((group & _LOW32, group >> np.uint64(32), call & 0xFFFFFFFF, call >> 32),
                          (seed & 0xFFFFFFFF, seed >> 32))
    return (np.stack(words, axis=1).reshape(-1)[:n] >> 8) >= threshold


def dropout_apply(x, seed, call, threshold, scale):
    """x * (scale where kept, else 0): forward, and backward with dy as x."""
    keep = dropout_keep(x.size, seed, call, threshold).reshape(x.shape)
    return x * np.where(keep, x.dtype.type(scale), x.dtype.type(0))
