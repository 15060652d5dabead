"""NumPy convolution (see `gpucnn.backends` for the contract).

A convolution gathers the input windows of one tile of its output into an im2col matrix
and multiplies with BLAS; the only Python loops run over tiles. A tile is sized to stay
in the CPU's cache, so the KH*KW-times-larger matrix of all windows never exists; the
tiles are shared out over a few threads (`set_num_threads`).
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...checks import output_size
from ._common import on_tiles, scratch

# Bytes of im2col matrix per tile: what one core's share of L2 and L3 cache holds well.
TILE_BYTES = 1 << 21


def _pad(x, padding):
    """x zero-padded, in scratch memory: for the caller's own use within the call."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    out = scratch("padded", (N, C, H + 2 * ph, W + 2 * pw), x.dtype, zero=True)
    out[:, :, ph : ph + H, pw : pw + W] = x
    return out


def _extent(k, dilation):
    """The rows (or columns) a filter of k taps spans with `dilation` - 1 holes between taps."""
    return dilation * (k - 1) + 1


class _WideIm2col:
    """The im2col matrix of x (N, C, H, W) as a view, its output positions on "wide" rows.

    Output (oh, ow) is numbered p = oh*R + ow with R*SW = SH*W: then its window starts at
    input pixel oh*SH*W + ow*SW = p*SW of the flattened image, so for each (c, ky, kx)
    the matrix row over all positions is a view of the image with a single stride, and
    a tile of it copies in long runs rather than OW-long pieces. Positions ow >= OW of
    each wide row (R - OW of them) are computed too and dropped.
    """

    def __init__(self, x, kernel, stride, dilation):
        (KH, KW), (sh, sw), (dh, dw) = kernel, stride, dilation
        N, C, H, W = x.shape
        self.OH, self.OW = output_size(H, _extent(KH, dh), sh, 0), output_size(W, _extent(KW, dw), sw, 0)
        extra = -W % (sw // math.gcd(sh, sw)) if self.OH > 1 else 0
        if extra:  # R must be a whole number: zero columns on the right, which make no output
            x = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
            W = x.shape[3]
        x = np.ascontiguousarray(x)
        self.R = sh * W // sw if self.OH > 1 else self.OW
        P = (self.OH - 1) * self.R + self.OW  # up to the last real position: inside the image
        sN, sC, sH, sW = x.strides
        # Tap (ky, kx) of a dilated filter reads D*ky rows and D*kx columns from the window's corner.
        self.view = as_strided(x, (N, C, KH, KW, P), (sN, sC, dh * sH, dw * sW, sw * sW), writeable=False)
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
        part = scratch("im2col", view.shape, self.dtype)
        np.copyto(part, view)
        return part.reshape(len(part), -1, part.shape[-1])

    def real(self, a, tile):
        """(samples, channels, wide positions) of a tile as a view of its (.., rows, columns)."""
        _, rows, cols = tile
        s0, s1, s2 = a.strides
        shape = a.shape[:2] + (rows.stop - rows.start, cols.stop - cols.start)
        return as_strided(a, shape, (s0, s1, self.R * s2, s2))


def _correlate(x, w, b, stride, dilation, groups):
    """Valid cross-correlation (no padding) of x (N, C, H, W) with w (O, C/groups, KH, KW), plus b.

    Group g's outputs O/groups * g .. see only its C/groups input channels: in the im2col
    matrix (channels major) those are one block of rows, so each group is its own product.
    """
    O, _, KH, KW = w.shape
    im2col = _WideIm2col(x, (KH, KW), stride, dilation)
    y = np.empty((x.shape[0], O, im2col.OH, im2col.OW), dtype=np.result_type(x, w))
    w_mat = w.reshape(groups, O // groups, -1)

    def work(tile):
        n, rows, cols = tile
        windows = im2col.gather(tile)
        windows = windows.reshape(len(windows), groups, -1, windows.shape[-1])
        # per sample and group (O/G, C/G*KH*KW) @ (C/G*KH*KW, positions)
        out = np.matmul(w_mat, windows).reshape(len(windows), O, -1)
        if b is not None:
            out += b[:, None]
        y[n, :, rows, cols] = im2col.real(out, tile)

    on_tiles(work, im2col.tiles(), w.size)
    return y


def conv2d_forward(x, w, b, stride, padding, dilation=(1, 1), groups=1):
    return _correlate(_pad(x, padding), w, b, stride, dilation, groups)


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


def conv2d_backward_data(dy, w, x_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dx as the seeds derive it: a "full" convolution of dy with rot180(w).

    The stride-S gradient is first spread onto the stride-1 grid; zero-padding it by
    E - 1 on each side (E = D*(K-1) + 1, the dilated filter's extent) makes the
    correlation with the rotated dilated filter "full"; rotating the dilated filter is
    dilating the rotated one. Channel c of dx takes channel c of every filter, summed
    over the filters (seed 002), which is a stride-1 convolution with the filter's in/out
    axes swapped; with groups, over the filters of c's group only. Of the full result
    only the H x W inside the layer's own padding P is dx, so only the windows that
    produce it are computed: those on rows and columns P .. P+H+E-2 of the padded gradient.
    """
    N, C, H, W = x_shape
    O, CG, KH, KW = w.shape
    EH, EW = _extent(KH, dilation[0]), _extent(KW, dilation[1])
    full = spread_to_stride1(dy, stride)
    padded = scratch("full", (N, O, H + EH - 1, W + EW - 1), dy.dtype, zero=True)
    # Row i of `full` is row i + E-1 of the E-1-padded gradient, row i + E-1-P of its
    # part from row P on; rows that land outside are ones no window of dx reaches.
    # Rows and columns of x that no window reached (when (H + 2P - E) % S != 0) stay 0.
    (top, left) = (EH - 1 - padding[0], EW - 1 - padding[1])
    src = full[:, :, max(0, -top) :, max(0, -left) :]
    dst = padded[:, :, max(0, top) :, max(0, left) :]
    rows, cols = min(src.shape[2], dst.shape[2]), min(src.shape[3], dst.shape[3])
    dst[:, :, :rows, :cols] = src[:, :, :rows, :cols]
    # (C, O/G, KH, KW): group g's block of filters with its in/out axes swapped
    w_t = rot180(w).reshape(groups, O // groups, CG, KH, KW).transpose(0, 2, 1, 3, 4)
    return _correlate(padded, np.ascontiguousarray(w_t).reshape(C, O // groups, KH, KW), None, (1, 1),
                      dilation, groups)


def conv2d_backward_weight(x, dy, w_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dw: the layer's input correlated with dy, summed over batch and positions."""
    O, CG, KH, KW = w_shape
    im2col = _WideIm2col(_pad(x, padding), (KH, KW), stride, dilation)

    def work(tile):
        n, rows, cols = tile
        windows = im2col.gather(tile)
        samples, positions = len(windows), windows.shape[2]
        # The tile of dy on the same wide positions, zero on the dropped ones, channels
        # last: the product then reads both matrices along their rows, as BLAS likes.
        dy_t = np.zeros((samples, positions, O), dtype=dy.dtype)
        im2col.real(dy_t.transpose(0, 2, 1), tile)[...] = dy[n, :, rows, cols]
        dy_t = dy_t.reshape(samples, positions, groups, O // groups).transpose(0, 2, 1, 3)
        # per sample and group (C/G*KH*KW, positions) @ (positions, O/G), summed over the samples
        return np.matmul(windows.reshape(samples, groups, -1, positions), dy_t).sum(axis=0)

    parts = on_tiles(work, im2col.tiles(), math.prod(w_shape))
    if not parts:  # an empty batch has no tiles; its gradient is an empty sum, 0 (as in PyTorch)
        return np.zeros(w_shape, dtype=np.result_type(x, dy))
    dw_t = sum(parts)  # (G, C/G*KH*KW, O/G)
    return np.ascontiguousarray(dw_t.transpose(0, 2, 1), dtype=np.result_type(x, dy)).reshape(w_shape)


def conv2d_backward_bias(dy):
    N, O, OH, OW = dy.shape  # spelled out: reshape cannot infer a -1 beside N = 0
    return dy.reshape(N, O, OH * OW).sum(axis=2).sum(axis=0)
