"""NumPy max and average pooling (see `gpucnn.backends` for the contract), with zero padding
and PyTorch's ceil mode.

Whole-array passes, one per offset in the window, over the input padded so that every
window lies inside: the only Python loops run over the KH*KW offsets, and, for max pooling,
over chunks of planes small enough for the passes to stay in a core's cache (`chunks`),
which the threads share out (`share_out`).
"""
import numpy as np

from ...checks import pool_output_size, pool_padding, pool_plane
from ._common import chunks, share_out


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
        """x (any number of planes) inside a padded array of `fill`, for reading; x itself when
        the windows need no padding."""
        (PH, PW), (H, W) = self.padding, self.x_shape[2:]
        if not self.padding_needed:
            return x
        out = np.full(x.shape[:2] + self.padded, fill, dtype=x.dtype)
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
    the padding (-inf) never wins.
    """
    layout = _PoolLayout("max_pool2d_forward", x.shape, kernel, stride, padding, ceil_mode)
    N, C, H, W = x.shape
    y = np.empty((N, C) + layout.out, dtype=x.dtype)
    argmax = np.empty((N, C) + layout.out, dtype=np.int32)
    planes, y_planes, argmax_planes = (a.reshape((N * C, 1) + a.shape[2:]) for a in (x, y, argmax))
    share_out(lambda s: _max_pool_planes(layout, planes[s], y_planes[s], argmax_planes[s]), chunks(N * C, 4 * H * W))
    return y, argmax


def _max_pool_planes(layout, x, y, argmax):
    """max_pool2d_forward of some planes x (P, 1, H, W) into y and argmax (P, 1, OH, OW).

    Whole-array passes, one per window offset, without masked copies (several times slower
    than arithmetic): the argmax steps by replace * (k - argmax), and the maximum is
    np.maximum's, NaN propagating, whose sign of zero is then set from x.
    """
    padded = layout.pad(x, -np.inf)
    offsets = layout.offsets()
    # Starting from the window's first offset, padding or not, picks as starting from its first
    # position inside x: -inf replaces nothing and nothing but NaN replaces -inf.
    y[...] = padded[next(offsets)[1]]
    # The argmax counts in the narrowest integer that holds a window's offsets: a quarter of
    # int32's memory traffic in its three passes per offset.
    index = np.empty(y.shape, np.int8 if layout.kernel[0] * layout.kernel[1] <= 127 else np.int32)
    index[...] = layout.first_inside() if layout.padding_needed else 0
    # One reduction over x for each rare case, without temporaries: a NaN makes the maximum NaN,
    # and -0.0's bits, read as an integer, are the smallest integer there is.
    nan = bool(np.isnan(x.max()))  # the NaN test only where it can matter
    replace, step = np.empty(y.shape, dtype=bool), np.empty(y.shape, dtype=index.dtype)
    for k, s in offsets:
        v = padded[s]
        np.greater(v, y, out=replace)
        if nan:
            replace |= np.isnan(v)
        np.subtract(k, index, out=step, dtype=index.dtype)
        step *= replace
        index += step
        np.maximum(y, v, out=y)
    argmax[...] = index
    bits = np.dtype(f"i{x.itemsize}")
    if x.view(bits).min() == np.iinfo(bits).min:  # a -0.0 may tie a 0.0: the picked one's sign
        (KH, KW), (SH, SW) = layout.kernel, layout.stride
        zero = y == 0
        n, c, oh, ow = np.nonzero(zero)
        picked = argmax[zero]
        y[zero] = padded[n, c, oh * SH + picked // KW, ow * SW + picked % KW]


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride, padding=(0, 0), ceil_mode=False):
    """Route each window's gradient to its argmax; overlapping windows add up (seeds 001-003).

    A scatter: each dy element is added to the input its argmax names, in the order of the
    windows (n, c, oh, ow ascending; `np.add.at` adds repeated targets one by one in order),
    onto zeros. pool2d.cu's gather sums a pixel's covering windows in the same order from
    zero, so the two give the same bits; and each dy value is only ever added, never
    multiplied by a 0/1 mask, so a NaN or inf goes where its argmax says and nowhere else.
    Chunk by chunk of planes, so that the indices and dx's chunk stay in cache.
    """
    layout = _PoolLayout("max_pool2d_backward", x_shape, kernel, stride, padding, ceil_mode)
    N, C, H, W = x_shape
    (KW, (SH, SW), (PH, PW)), (OH, OW) = (kernel[1], stride, padding), dy.shape[2:]
    # The flat index into a plane of x of window (oh, ow)'s offset k: the window's corner in
    # the padded input, moved back by the padding, plus the offset's row and column. The
    # padding never wins, so the sum lands inside x.
    at_offset = np.array([(k // KW) * W + k % KW for k in range(kernel[0] * KW)], dtype=np.int64)
    corner = (np.arange(OH) * SH - PH)[:, None] * W + (np.arange(OW) * SW - PW)[None, :]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    dx_planes = dx.reshape(N * C, H * W)
    dy_planes, argmax_planes = dy.reshape(N * C, OH * OW), argmax.reshape(N * C, OH * OW)

    def scatter(s):
        target = np.take(at_offset, argmax_planes[s])
        target += corner.reshape(-1)
        target += (np.arange(s.stop - s.start, dtype=np.int64) * (H * W))[:, None]
        np.add.at(dx_planes[s].reshape(-1), target.reshape(-1), dy_planes[s].reshape(-1))

    share_out(scatter, chunks(N * C, 4 * H * W))
    return dx


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
