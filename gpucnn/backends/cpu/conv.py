"""NumPy convolution (see `gpucnn.backends` for the contract).

A convolution gathers the input windows of one tile of its output (several whole
samples, or rows of one) into an im2col matrix and multiplies it with the filters in one
batched matmul (BLAS, one product per sample or one for the whole tile); the only Python
loops run over tiles and, in backward-data, over the stride phases and filter taps. A
tile is bounded (TILE_BYTES), so the KH*KW-times-larger matrix of all windows never
exists; the tiles are shared out over a few threads (`set_num_threads`).
"""
import itertools
import math
from collections import namedtuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...checks import output_size
from . import depthwise, winograd
from ._common import PARALLEL_MACS, on_tiles, rows_of, scratch

# Bytes of im2col matrix per tile: what one core's share of L2 and L3 cache holds well...
TILE_BYTES = 1 << 21
# ...unless that leaves fewer output positions than this, too few for an efficient product
# (VGG's 256-channel 8x8 layer: 2304 rows, a tile of 227 positions ran 2-3x slower).
TILE_POSITIONS = 1024
# Backward-data goes tap by tap (`_scatter_by_taps`) where dx has fewer channels than dy,
# and at most this many: measured on one core, 2-3x faster for 1-6 channels (LeNet, the
# ResNet stem, the audio layer), no faster at 64 (VGG's 64 -> 128), 25% slower at 128.
TAPS_MAX_CHANNELS = 32
# Stride-1 positions go on wide rows (see `_Im2col`) unless the dropped positions cost more
# than the long copies save: when a product has many rows (taps) per position, and more
# than 15% of the wide positions are dropped. Measured on one core: VGG's 256-channel 8x8
# layer (20% dropped) 10-20% faster exact; LeNet's conv2 (29% dropped, 150 taps) 20%
# faster wide; 16x16 maps (11%) the same either way.
WIDE_FILL = 0.85
WIDE_THIN_TAPS = 256
# Positions per sample from which thick products, too, go sample by sample (`_per_sample`).
PER_SAMPLE_POSITIONS = 96
# Most taps in a filter row's gather (C/G * KW) for which the weight gradient folds (`_folds`).
FOLD_ROWS = 48


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


class _Im2col:
    """The im2col matrix of x (N, C, H, W): one row per filter tap (c, ky, kx), one column
    per output position, samples major, so that a tile of several samples is one matrix
    and its product one BLAS call.

    At stride 1 the positions of a sample lie on "wide" rows: output (oh, ow) is column
    p = oh*R + ow with R = W, so its window starts at pixel p of the flattened image and
    each tap's row of the matrix is a view of the image with a single stride, copied in
    long runs rather than OW-long pieces. The R - OW positions past each row's end are
    computed too and dropped. At other strides that would compute S times too many, and
    on small maps with many taps too many as well (see WIDE_FILL), so there R = OW: the
    positions are exactly the outputs.

    On wide rows, filter row ky's taps read what row 0's read, ky*D*W positions later. A
    folded matrix (`fold`, see `_folds`) gathers only row 0's taps (c, kx), over KH - 1 more
    rows of positions: KH times less to copy. Each filter row is then a view of it shifted
    by ky*D*W columns (`filter_row`), which BLAS reads in place, and the layer is KH
    products. Its tiles are samples major, (samples, C*KW, positions), so that each
    sample's matrix is contiguous.
    """

    def __init__(self, x, kernel, stride, dilation, fold=False):
        (KH, KW), (sh, sw), (dh, dw) = kernel, stride, dilation
        N, C, H, W = x.shape
        self.C, self.KH, self.KW, self.N = C, KH, KW, N
        self.OH, self.OW = output_size(H, _extent(KH, dh), sh, 0), output_size(W, _extent(KW, dw), sw, 0)
        sN, sC, sH, sW = x.strides
        # Tap (ky, kx) of a dilated filter reads D*ky rows and D*kx columns from the window's corner.
        taps = (C, KH, KW), (sC, dh * sH, dw * sW)
        self.wide = (sh == sw == 1 and self.OH > 1 and sH == W * sW
                     and (self.OW >= WIDE_FILL * W or C * KH * KW <= WIDE_THIN_TAPS))
        self.fold = fold and self.wide and KH > 1
        if self.fold:  # row 0's taps (c, kx), over KH - 1 more filter rows' positions; samples major
            self.R, self.row_shift = W, dh * W
            extended = (self.OH - 1 + dh * (KH - 1)) * W + self.OW
            self.view = as_strided(x, (N, C, KW, extended), (sN, sC, dw * sW, sW), writeable=False)
        elif self.wide:
            self.R = W
            self.view = as_strided(x, taps[0] + (N, (self.OH - 1) * W + self.OW), taps[1] + (sN, sW), writeable=False)
        else:
            self.R = self.OW
            self.view = as_strided(x, taps[0] + (N, self.OH, self.OW), taps[1] + (sN, sh * sH, sw * sW), writeable=False)

    def tiles(self):
        """(samples, rows, columns) slices of the output, each one tile of about TILE_BYTES.

        Several whole samples when one fits; else some rows of one sample; else, for a row
        longer than a tile (a long 1D signal), part of one row.
        """
        C, KH, KW, N = self.C, self.KH, self.KW, self.N
        OH, OW, R = self.OH, self.OW, self.R
        positions = max(TILE_BYTES // (C * KH * KW * self.view.dtype.itemsize), TILE_POSITIONS)
        if (OH - 1) * R + OW <= positions:
            nb = positions // ((OH - 1) * R + OW)
            return [(slice(n, min(n + nb, N)), slice(0, OH), slice(0, OW)) for n in range(0, N, nb)]
        if R <= positions:
            rows = positions // R
            return [(slice(n, n + 1), slice(r, min(r + rows, OH)), slice(0, OW))
                    for n in range(N) for r in range(0, OH, rows)]
        return [(slice(n, n + 1), slice(r, r + 1), slice(c, min(c + positions, OW)))
                for n in range(N) for r in range(OH) for c in range(0, OW, positions)]

    def gather(self, tile):
        """The tile's im2col matrix, (C*KH*KW, samples, positions), or folded (samples, C*KW,
        positions), in this thread's scratch memory."""
        n, rows, cols = tile
        if self.fold:  # as below, and the KH - 1 filter rows' further positions: (samples, C*KW, positions)
            start, stop = rows.start * self.R + cols.start, (rows.stop - 1) * self.R + cols.stop
            view = self.view[n, :, :, start : stop + self.row_shift * (self.KH - 1)]
            part = scratch("im2col", view.shape, view.dtype)
            np.copyto(part, view)
            return part.reshape(len(part), -1, part.shape[-1])
        if self.wide:  # a tile's wide positions run from its first real one to its last
            view = self.view[:, :, :, n, rows.start * self.R + cols.start : (rows.stop - 1) * self.R + cols.stop]
        else:
            view = self.view[:, :, :, n, rows, cols]
        part = scratch("im2col", view.shape, view.dtype)
        np.copyto(part, view)
        return part.reshape(math.prod(view.shape[:3]), view.shape[3], -1)

    def filter_row(self, windows, ky):
        """A folded gather's matrix for filter row ky: its positions shifted by ky rows."""
        positions = windows.shape[-1] - self.row_shift * (self.KH - 1)
        return windows[..., ky * self.row_shift : ky * self.row_shift + positions]

    def outputs(self, a, tile):
        """The real outputs, (channels, samples, rows, columns), of a tile's product a
        (channels, samples, positions), as a view."""
        n, rows, cols = tile
        width = cols.stop - cols.start
        return rows_of(a, rows.stop - rows.start, width, self.R if self.wide else width)


def _folds(w_shape, groups, weight_gradient=False):
    """Whether a stride-1 correlation with filters of w_shape (O, C/G, KH, KW), or its weight
    gradient, gathers one filter row's taps (C*KW rows per position, `_Im2col`'s fold)
    rather than all of them (C*KH*KW).

    The fold copies KH times less but makes KH products of 1/KH the depth, and the
    forward adds them up. Measured on one core against the whole gather (interleaved, 11
    rounds): the forward gains where the layer has at least as many input channels as
    output channels (ResNet-20's 16 and 32 channels 1.23x and 1.28x, 64 -> 64 dilated
    the same) and loses where it has fewer (VGG's 3 -> 64 0.67x, LeNet's 1 -> 6 0.86x); the
    weight gradient gains while a row's taps are few (LeNet's conv1 and conv2 1.10x and
    1.25x, VGG's first layer 1.29x, 16 channels 1.23x) and loses from 32 channels on
    (0.87-0.96x): FOLD_ROWS.
    """
    O, CG, KH, KW = w_shape
    if weight_gradient:
        return CG * KW <= FOLD_ROWS
    return CG >= O // groups


def _per_sample(macs_per_position, positions):
    """Whether a tile's products go sample by sample (one batched matmul) rather than as one.

    OpenBLAS (0.3.31, one core) multiplied thin products faster sample by sample (LeNet's
    layers 1.5-5x), and thick ones too where a sample has many positions (64 channels at
    32x32: backward-weight 15% faster), but VGG's 8x8 layers 1.2-1.5x faster as one
    product over all the tile's samples.
    """
    return macs_per_position < PARALLEL_MACS or positions >= PER_SAMPLE_POSITIONS


def _correlate(x, w, b, stride, dilation, groups, out=None):
    """Valid cross-correlation (no padding) of x (N, C, H, W) with w (O, C/groups, KH, KW), plus b,
    written into out (any (N, O, OH, OW) view) or a new array.

    Group g's outputs O/groups * g .. see only its C/groups input channels: in the im2col
    matrix (channels major) those are one block of rows, so each group is its own product.
    """
    O, CG, KH, KW = w.shape
    im2col = _Im2col(x, (KH, KW), stride, dilation, fold=_folds(w.shape, groups))
    dtype = np.result_type(x, w)
    y = np.empty((x.shape[0], O, im2col.OH, im2col.OW), dtype) if out is None else out
    if depthwise.applies(w.shape, stride, groups):
        return depthwise.correlate(x, w, b, dilation, y)
    if winograd.applies(w.shape, stride, dilation, groups):
        return winograd.correlate(x, w, b, y)
    w_mat = w.reshape(groups, O // groups, -1)
    # per filter row ky, per group: (O/G, C/G*KW), columns (c, kx) as the folded gather's rows
    w_rows = [np.ascontiguousarray(w[:, :, ky].reshape(groups, O // groups, CG * KW)) for ky in range(KH)]

    def work(tile):
        windows = im2col.gather(tile)
        if im2col.fold:  # per filter row ky, per group (O/G, C/G*KW) @ (C/G*KW, positions), added up
            samples, K, _ = windows.shape
            rows = [im2col.filter_row(windows, ky) for ky in range(KH)]
            positions = rows[0].shape[-1]
            product = scratch("product", (samples, groups, O // groups, positions), dtype)
            term = scratch("product_term", product.shape, dtype)
            for ky, matrix in enumerate(rows):
                np.matmul(w_rows[ky], matrix.reshape(samples, groups, K // groups, positions), out=term if ky else product)
                if ky:
                    product += term
            product = product.reshape(samples, O, positions).transpose(1, 0, 2)
            return finish(product, tile)
        K, samples, positions = windows.shape
        windows = windows.reshape(groups, K // groups, samples, positions)
        # per group (O/G, C/G*KH*KW) @ (C/G*KH*KW, positions), sample by sample or all at once
        if _per_sample(w.size, positions):
            product = scratch("product", (samples, groups, O // groups, positions), dtype)
            np.matmul(w_mat, windows.transpose(2, 0, 1, 3), out=product)
            product = product.reshape(samples, O, positions).transpose(1, 0, 2)
        else:
            product = scratch("product", (groups, O // groups, samples * positions), dtype)
            np.matmul(w_mat, windows.reshape(groups, K // groups, -1), out=product)
            product = product.reshape(O, samples, positions)
        finish(product, tile)

    def finish(product, tile):
        """The tile's product (O, samples, positions), plus the bias, into y."""
        if b is not None:
            product += b[:, None, None]
        y[tile[0], :, tile[1], tile[2]] = im2col.outputs(product, tile).transpose(1, 0, 2, 3)

    on_tiles(work, im2col.tiles(), w.size)
    return y


def conv2d_forward(x, w, b, stride, padding, dilation=(1, 1), groups=1):
    return _correlate(_pad(x, padding), w, b, stride, dilation, groups)


def spread_to_stride1(dy, stride):
    """Put a stride-S gradient map back on the stride-1 grid, zeros in between (seed 002).

    The seeds' formulation of strided backward-data (and the tests' reference for it);
    `conv2d_backward_data` computes the same sums without the zeros, phase by phase.
    """
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


class _Phase(namedtuple("_Phase", "first count taps offset dilation")):
    """Along one axis, the dx pixels first, first + S, ... (count of them) and what reaches them:
    the filter taps (ascending) whose spread-grid terms are not inserted zeros, the dy index
    that the last tap reads for the first pixel, and the dilation between those reads."""


def _phases(size, kernel, stride, padding, dilation):
    """The stride phases of one axis of dx (see `conv2d_backward_data`)."""
    phases = []
    for first in range(min(stride, size)):
        # Pixel i reads spread-grid row i + P - D*k through tap k: a real dy row when S divides it.
        taps = tuple(k for k in range(kernel) if (first + padding - dilation * k) % stride == 0)
        offset = (first + padding - dilation * taps[-1]) // stride if taps else 0
        phases.append(_Phase(first, len(range(first, size, stride)), taps, offset,
                             dilation // math.gcd(stride, dilation)))
    return phases


def conv2d_backward_data(dy, w, x_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dx as the seeds derive it: a "full" convolution of dy with rot180(w), without
    the zeros that spreading dy onto the stride-1 grid inserts.

    The seeds spread the stride-S gradient onto the stride-1 grid and zero-pad it by
    E - 1 (E = D*(K-1) + 1, the dilated filter's extent); the correlation with the rotated
    dilated filter is then "full", and its H x W inside the layer's padding P is dx.
    On that grid, dx pixel i meets a real dy value through tap k only when S divides
    i + P - D*k, so the pixels of one residue i mod S (a stride phase) all meet the same
    taps, S/gcd(S, D) apart, reading dy D/gcd(S, D) apart. Each phase is therefore itself
    a full convolution of the unspread dy with its taps' sub-filter, rotated, at that
    dilation: the seeds' sum with its zero terms dropped (S*S phases, each 1/(S*S) of the
    work). Channel c of dx takes channel c of every filter of its group, summed over those
    filters (seed 002): a convolution with the filter's in/out axes swapped per group.
    A phase that no tap reaches (stride > kernel) gets zeros.
    """
    N, C, H, W = x_shape
    O, CG, KH, KW = w.shape
    dx = np.empty(x_shape, np.result_type(dy, w))
    rows = _phases(H, KH, stride[0], padding[0], dilation[0])
    cols = _phases(W, KW, stride[1], padding[1], dilation[1])
    for row, col in itertools.product(rows, cols):
        target = dx[:, :, row.first :: stride[0], col.first :: stride[1]]
        if not row.taps or not col.taps:
            target.fill(0)
            continue
        sub = rot180(w[:, :, row.taps][:, :, :, col.taps])
        sub = sub.reshape(groups, O // groups, CG, len(row.taps), len(col.taps)).transpose(0, 2, 1, 3, 4)
        sub = np.ascontiguousarray(sub).reshape(C, O // groups, len(row.taps), len(col.taps))
        # Fewer dx channels than dy channels (a network's first layers): scattering the taps'
        # products moves less memory than gathering dy's windows (the ResNet stem's 3 from 64).
        if C < O and C <= TAPS_MAX_CHANNELS:
            _scatter_by_taps(dy, sub, row, col, groups, target)
        else:
            _correlate(_dy_window(dy, row, col), sub, None, (1, 1), (row.dilation, col.dilation), groups, out=target)
    return dx


def _scatter_by_taps(dy, w, row, col, groups, out):
    """One stride phase of `conv2d_backward_data`, dy-major: the products of the phase's
    taps with every dy position, in one matmul per sample, each tap's product then added
    onto the pixels that tap carries it to. The same sums as the phase's full correlation
    (`_correlate` of the zero-bordered dy window), which gathers O*KH*KW dy values per dx
    pixel where this writes C*KH*KW products per dy position: less when dx has fewer
    channels (C) than dy (O). And the border's zeros are never multiplied.

    Along an axis, the phase's pixel i reads dy[i + offset + d*t] through tap t of the
    rotated sub-filter w (n taps, dilation d): dy position a reaches pixel a - offset - d*t.
    The sums are made on a frame, the phase's full output: frame index a + d*(n-1-t), so
    that every shift is >= 0 and pixel i is frame index i + offset + d*(n-1). dy lies on
    the frame's wide rows (RF = OW + d*(n-1) long, as `_Im2col`'s), position q = a*RF + b,
    where a tap's shift is one offset and its add one long run per channel; the gaps past
    each row's OW values are zeros, whose products add nothing where the shift carries them.

    A row of taps can also go into the product together (fold = its n taps), against n
    copies of dy shifted by one tap each (a gather of O*n rows): then there are n_rows
    products to shift and add, not n_rows*n. That moves less memory when O*n + 2*C*n_rows <
    2*C*n_rows*n (LeNet's 6 channels from 16: 140 against 300 values per position), and is
    chosen then.
    """
    N, O, OH, OW = dy.shape
    C, OG, NR, NC = w.shape  # dx channels, each one's group of dy channels, the phase's taps
    (dr, dc), dtype = (row.dilation, col.dilation), np.result_type(dy, w)
    fold = NC if O * NC + 2 * C * NR < 2 * C * NR * NC else 1  # a row's taps in one product
    # per group (C/G * NR * NC/fold, O/G * fold): row (c, tap row, tap column // fold), column (o, tap column % fold)
    w_taps = w.reshape(groups, C // groups, OG, NR, NC // fold, fold).transpose(0, 1, 3, 4, 2, 5)
    w_taps = np.ascontiguousarray(w_taps, dtype).reshape(groups, -1, OG * fold)
    RF, FH = OW + dc * (NC - 1), OH + dr * (NR - 1)  # the frame's wide rows
    length, margin = OH * RF, dc * (fold - 1)
    shifts = [dr * (NR - 1 - r) * RF + dc * (NC - (g + 1) * fold) for r in range(NR) for g in range(NC // fold)]
    # The phase's pixels that the frame holds, per axis: (first pixel, end, frame index of the first).
    spans = [(max(0, -base), max(0, min(p.count, size - base)), max(0, base))
             for p, base, size in ((row, row.offset + dr * (NR - 1), FH), (col, col.offset + dc * (NC - 1), RF))]
    (r0, r1, fr), (c0, c1, fc) = spans
    nb = max(1, TILE_BYTES // (C * NR * (NC // fold) * length * dtype.itemsize))

    def work(n):
        k = len(dy[n])
        # dy on the frame's rows, behind `margin` zeros: column tap j of a fold reads it j*dc later
        ends = scratch("dy_rows", (k, O, margin + length), dtype, zero=True)
        ends[:, :, margin:].reshape(k, O, OH, RF)[..., :OW] = dy[n]
        if fold == 1:
            operand = ends.reshape(k, groups, OG, length)
        else:
            e = ends.strides
            shifted = as_strided(ends, (k, groups, OG, fold, length), (e[0], OG * e[1], e[1], dc * e[2], e[2]))
            operand = scratch("shifted", (k, groups, OG * fold, length), dtype)
            operand.reshape(shifted.shape)[...] = shifted
        taps = scratch("taps", (k, groups, w_taps.shape[1], length), dtype)
        np.matmul(w_taps, operand, out=taps)
        taps = taps.reshape(k, C, len(shifts), length)
        frame = scratch("frame", (k, C, FH * RF), dtype, zero=True)
        for t, shift in enumerate(shifts):
            end = min(length, FH * RF - shift)  # what falls past the frame is a last row's gap
            frame[:, :, shift : shift + end] += taps[:, :, t, :end]
        frame = frame.reshape(k, C, FH, RF)
        out[n, :, r0:r1, c0:c1] = frame[:, :, fr : fr + r1 - r0, fc : fc + c1 - c0]

    if (r0, c0) != (0, 0) or (r1, c1) != out.shape[2:]:  # pixels that no dy position reaches
        out.fill(0)
    on_tiles(work, [slice(n, min(n + nb, N)) for n in range(0, N, nb)], w.size)
    return out


def _dy_window(dy, row, col):
    """The dy rows and columns that a phase's full convolution reads, zero past dy's edges."""
    spans = [(p.offset, p.count + p.dilation * (len(p.taps) - 1)) for p in (row, col)]
    (top, height), (left, width) = spans
    N, O, OH, OW = dy.shape
    if top >= 0 and left >= 0 and top + height <= OH and left + width <= OW:
        return dy[:, :, top : top + height, left : left + width]
    window = scratch("phase", (N, O, height, width), dy.dtype, zero=True)
    src = dy[:, :, max(0, top) : top + height, max(0, left) : left + width]
    dst = window[:, :, max(0, -top) :, max(0, -left) :]
    rows, cols = min(src.shape[2], dst.shape[2]), min(src.shape[3], dst.shape[3])
    dst[:, :, :rows, :cols] = src[:, :, :rows, :cols]
    return window


def conv2d_backward_weight(x, dy, w_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dw: the layer's input correlated with dy, summed over batch and positions."""
    O, CG, KH, KW = w_shape
    if depthwise.applies(w_shape, stride, groups):
        return depthwise.weight_gradient(_pad(x, padding), dy, w_shape, dilation)
    if winograd.applies(w_shape, stride, dilation, groups, weight_gradient=True):
        return winograd.weight_gradient(_pad(x, padding), dy)
    im2col = _Im2col(_pad(x, padding), (KH, KW), stride, dilation, fold=_folds(w_shape, groups, weight_gradient=True))

    def work(tile):
        windows = im2col.gather(tile)
        if im2col.fold:
            rows = [im2col.filter_row(windows, ky) for ky in range(KH)]
            samples, K, positions = rows[0].shape
        else:
            K, samples, positions = windows.shape
        # dy on the same columns, zero on the wide rows' dropped ones: copied in runs of OW
        dy_t = scratch("dy", (O, samples, positions), dy.dtype, zero=im2col.wide)
        im2col.outputs(dy_t, tile)[...] = dy[tile[0], :, tile[1], tile[2]].transpose(1, 0, 2, 3)
        dy_t = dy_t.reshape(groups, O // groups, samples, positions)
        if im2col.fold:  # per filter row ky, per group: (C/G*KW, positions) @ (positions, O/G), sample by sample
            per_sample = dy_t.transpose(2, 0, 3, 1)
            return np.stack([np.matmul(m.reshape(samples, groups, K // groups, positions), per_sample).sum(axis=0)
                             for m in rows])
        windows = windows.reshape(groups, K // groups, samples, positions)
        # per group (O/G, positions) @ (positions, C/G*KH*KW), summed over the positions and samples
        if _per_sample(math.prod(w_shape), positions):
            return np.matmul(windows.transpose(2, 0, 1, 3), dy_t.transpose(2, 0, 3, 1)).sum(axis=0).transpose(0, 2, 1)
        return np.matmul(dy_t.reshape(groups, O // groups, -1), windows.reshape(groups, K // groups, -1).transpose(0, 2, 1))

    parts = on_tiles(work, im2col.tiles(), math.prod(w_shape))
    dtype = np.result_type(x, dy)
    if not parts:  # an empty batch has no tiles; its gradient is an empty sum, 0 (as in PyTorch)
        return np.zeros(w_shape, dtype)
    total = sum(parts).astype(dtype, copy=False)
    if im2col.fold:  # from (KH, G, C/G*KW, O/G)
        return total.reshape(KH, groups, CG, KW, O // groups).transpose(1, 4, 2, 0, 3).reshape(w_shape)
    return total.reshape(w_shape)  # from (G, O/G, C/G*KH*KW)


def conv2d_backward_bias(dy):
    N, O, OH, OW = dy.shape  # spelled out: reshape cannot infer a -1 beside N = 0
    return dy.reshape(N, O, OH * OW).sum(axis=2).sum(axis=0)
