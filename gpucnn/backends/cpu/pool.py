"""NumPy max and average pooling (see `gpucnn.backends` for the contract), with zero padding
and PyTorch's ceil mode.

Whole-array passes, one per offset in the window, over the input padded so that every
window lies inside: the only Python loops run over the KH*KW offsets.
"""
import numpy as np

from ...checks import pool_output_size, pool_padding, pool_plane
from ._common import finite


def _strided_slot(kernel_offset, stride, out_size):
    """Slice of input positions that kernel offset k touches in each of the output windows."""
    return slice(kernel_offset, kernel_offset + stride * (out_size - 1) + 1, stride)


class _PoolLayout:
    """Where a pooling's windows lie: on x padded by `padding` in front and, behind, by as much
    as the last window (a ceil-mode one may reach past the padding) needs."""

    def __init__(self, op, x_shape, kernel, stride, padding, ceil_mode):
        pool_plane(op, x_shape)
        pool_padding(op, kernel, padding)
        self.x_shape, self.kernel, self.stride, self.padding = tuple(x_shape), kernel, stride, padding
        self.out = tuple(pool_output_size(size, k, s, p, ceil_mode)
                         for size, k, s, p in zip(x_shape[2:], kernel, stride, padding))
        self.padded = tuple(max(size + p, (o - 1) * s + k)
                            for size, k, s, p, o in zip(x_shape[2:], kernel, stride, padding, self.out))

    @property
    def padding_needed(self):
        """Whether any window reaches past x."""
        return any(self.padding) or self.padded != self.x_shape[2:]

    def pad(self, x, fill):
        """x inside a padded array of `fill`, for reading; x itself when the windows need no padding."""
        (PH, PW), (H, W) = self.padding, self.x_shape[2:]
        if not self.padding_needed:
            return x
        out = np.full(self.x_shape[:2] + self.padded, fill, dtype=x.dtype)
        out[:, :, PH : PH + H, PW : PW + W] = x
        return out

    def crop(self, padded):
        """The part of a padded array that is x's."""
        (PH, PW), (H, W) = self.padding, self.x_shape[2:]
        if not self.padding_needed:
            return padded
        return np.ascontiguousarray(padded[:, :, PH : PH + H, PW : PW + W])

    def offsets(self):
        """(k, slots) for each in-window offset k = ky*KW+kx: the padded positions it covers, window by window."""
        (KH, KW), (SH, SW), (OH, OW) = self.kernel, self.stride, self.out
        for ky in range(KH):
            for kx in range(KW):
                yield ky * KW + kx, (slice(None), slice(None), _strided_slot(ky, SH, OH), _strided_slot(kx, SW, OW))

    def spans(self, axis):
        """Per window along a spatial axis (0: rows), as pool2d.cu's Span: its start in x, and
        the ends of its part inside x and inside x and its padding."""
        size, k, s, p, o = self.x_shape[2 + axis], self.kernel[axis], self.stride[axis], self.padding[axis], self.out[axis]
        start = np.arange(o) * s - p
        return start, np.minimum(start + k, size), np.minimum(start + k, size + p)

    def first_inside(self):
        """Each window's in-window index of its first position inside x, (OH, OW)."""
        (top, _, _), (left, _, _) = self.spans(0), self.spans(1)
        return (np.maximum(-top, 0)[:, None] * self.kernel[1] + np.maximum(-left, 0)[None, :]).astype(np.int32)

    def divisor(self, count_include_pad):
        """What average pooling divides each window's sum by, as PyTorch, (OH, OW): see pool2d.cu."""
        def lengths(axis):
            start, end, padded_end = self.spans(axis)
            return padded_end - start if count_include_pad else end - np.maximum(start, 0)
        return np.multiply.outer(lengths(0), lengths(1))


def max_pool2d_forward(x, kernel, stride, padding=(0, 0), ceil_mode=False):
    """Max over each window; argmax is the in-window index ky*KW+kx of the maximum, counted
    from the window's corner in the padded input.

    PyTorch's rule, as pool2d.cu: scanning a window's positions in order from its first one
    inside x, a value replaces the running maximum when greater or NaN. So the first maximum
    wins a tie (-0.0 before 0.0 stays -0.0), the last NaN wins a window holding several, and
    the padding (-inf) never wins. Whole-array passes, one per window offset, without masked
    copies (several times slower than arithmetic): the argmax steps by replace * (k - argmax),
    and the maximum is np.maximum's, NaN propagating, whose sign of zero is then set from x.
    """
    layout = _PoolLayout("max_pool2d_forward", x.shape, kernel, stride, padding, ceil_mode)
    padded = layout.pad(x, -np.inf)
    offsets = layout.offsets()
    # Starting from the window's first offset, padding or not, picks as starting from its first
    # position inside x: -inf replaces nothing and nothing but NaN replaces -inf.
    y = padded[next(offsets)[1]].copy()
    argmax = np.zeros(y.shape, dtype=np.int32)
    if layout.padding_needed:
        argmax[...] = layout.first_inside()
    nan = bool(np.isnan(x).any())  # the NaN test only where it can matter
    replace, step = np.empty(y.shape, dtype=bool), np.empty(y.shape, dtype=np.int32)
    for k, s in offsets:
        v = padded[s]
        np.greater(v, y, out=replace)
        if nan:
            replace |= np.isnan(v)
        np.subtract(k, argmax, out=step)
        step *= replace
        argmax += step
        np.maximum(y, v, out=y)
    zero = y == 0
    if zero.any() and (np.signbit(x) & (x == 0)).any():  # -0.0 and 0.0 tie: the picked one's sign
        n, c, oh, ow = np.nonzero(zero)
        picked = argmax[zero]
        y[zero] = padded[n, c, oh * stride[0] + picked // kernel[1], ow * stride[1] + picked % kernel[1]]
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride, padding=(0, 0), ceil_mode=False):
    """Route each window's gradient to its argmax; overlapping windows add up (seeds 001-003)."""
    layout = _PoolLayout("max_pool2d_backward", x_shape, kernel, stride, padding, ceil_mode)
    dx = np.zeros(x_shape[:2] + layout.padded, dtype=dy.dtype)
    overlapping = any(s < k for s, k in zip(stride, kernel))
    masks_multiply = finite(dy)
    for k, slots in layout.offsets():
        chosen = argmax == k
        if masks_multiply and not overlapping:
            np.multiply(dy, chosen, out=dx[slots])
        elif masks_multiply:
            dx[slots] += dy * chosen
        else:
            np.add(dx[slots], dy, out=dx[slots], where=chosen)
    return layout.crop(dx)


def avg_pool2d_forward(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    """Each window's sum (padding adds zeros), in pool2d.cu's order, over its divisor."""
    layout = _PoolLayout("avg_pool2d_forward", x.shape, kernel, stride, padding, ceil_mode)
    padded = layout.pad(x, 0)
    offsets = layout.offsets()
    total = padded[next(offsets)[1]].copy()
    for _, s in offsets:
        total += padded[s]
    return total / layout.divisor(count_include_pad).astype(x.dtype)


def avg_pool2d_backward(dy, x_shape, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    """Split each window's gradient evenly over its divisor's positions."""
    layout = _PoolLayout("avg_pool2d_backward", x_shape, kernel, stride, padding, ceil_mode)
    share = dy / layout.divisor(count_include_pad).astype(dy.dtype)
    dx = np.zeros(x_shape[:2] + layout.padded, dtype=dy.dtype)
    for _, slots in layout.offsets():
        dx[slots] += share
    return layout.crop(dx)
