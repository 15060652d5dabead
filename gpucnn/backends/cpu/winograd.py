"""Winograd's minimal filtering F(2x2, 3x3) for the NumPy path's thick 3x3 stride-1
convolutions (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).

A 2x2 block of outputs of a 3x3 correlation reads a 4x4 tile d of the input; Winograd
computes it as

    y = A^T [(G g G^T) * (B^T d B)] A          (* element by element)

with g the 3x3 filter and constant matrices A (4x2), B (4x4), G (4x3) of 0, +-1 and 1/2.
Summed over input channels, each of the 16 elements of the transformed tiles is one matrix
product, (output channels x input channels) @ (input channels x tiles): 16 multiply-adds
per 2x2 outputs and channel pair where im2col's product spends 36. The transforms are
additions and subtractions of whole arrays, in two passes each (the rows' transform, then
the columns'), over the tiles of a few samples at once, which stay in cache. On this VM's
one core OpenBLAS runs im2col's products at 60-75 GFLOP/s where PyTorch's oneDNN
convolutions reach 100-120; fewer multiply-adds close most of that gap on thick layers
(`MIN_CHANNEL_PAIRS`).

Backward-data at stride 1 is the seeds' full convolution of dy with the filter turned by
180 degrees: a valid correlation of the padded dy, which `correlate` evaluates as above.
The weight gradient is the forward formula's adjoint: with V = B^T d B and Z = A dY A^T
(dY a 2x2 block of dy), dL/dg = G^T [sum over tiles of Z * V] G, again 16 products.

Rounding differs from the direct sum's: the transforms add and subtract up to four values
before the products (B's entries are 0 and +-1) and after (A's too), and the filter's
transform halves (G). In float32 the results stay about as close to a float64 sum as
im2col's (tests/test_conv_winograd.py).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._common import on_tiles, scratch

# Input times output channels from which a 3x3 layer's forward and backward-data go through
# Winograd, and its weight gradient: the transforms' cost grows with the channels, the
# products' saving with their product. Measured on one core against im2col in one process
# (forward, backward-data, weight gradient; batch 32): 64 -> 64 channels at 32x32 1.22x,
# 1.16x, 0.94x; 64 -> 128 at 16x16 1.30x, 1.17x, 1.07x; 128 -> 128 1.35x, 1.44x, 1.16x;
# 256 -> 256 at 8x8 1.36x, 1.27x, 1.29x.
MIN_CHANNEL_PAIRS = 64 * 64
WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS = 64 * 128
# Tiles (2x2 output blocks) per product: samples are grouped until they have this many
# (a 32x32 map has 256, an 8x8 one 16); 256 ran faster than 1024 at every VGG layer.
TILES = 256

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
# vec(G g G^T) = (G (x) G) vec(g) for a 3x3 g flattened row by row: every filter at once.
_FILTER = np.kron(_G, _G)


def applies(w_shape, stride, dilation, groups, weight_gradient=False):
    """Whether a correlation with filters of w_shape (O, C/G, KH, KW), or its weight
    gradient, goes through Winograd."""
    O, CG, KH, KW = w_shape
    pairs = WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS if weight_gradient else MIN_CHANNEL_PAIRS
    return ((KH, KW) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
            and O * CG >= pairs)


class _Tiles:
    """The 4x4 tiles, 2 apart, of a valid 3x3 correlation of x (N, C, H, W): TH x TW per
    sample, and batches of samples with about TILES tiles each."""

    def __init__(self, x_shape):
        N, _, H, W = x_shape
        self.OH, self.OW = H - 2, W - 2
        self.TH, self.TW = (self.OH + 1) // 2, (self.OW + 1) // 2
        nb = max(1, TILES // (self.TH * self.TW))
        self.batches = [slice(n, min(n + nb, N)) for n in range(0, N, nb)]

    def transformed_inputs(self, x):
        """V = B^T d B of every tile d of x (samples, C, H, W): (16, C, samples*TH*TW), element
        (i, j) of the transformed tiles at 4*i + j.

        B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] takes a tile's rows
        (r0, r1, r2, r3) to (r0 - r2, r1 + r2, r2 - r1, r1 - r3), and then its columns alike.
        """
        k, C, H, W = x.shape
        TH, TW = self.TH, self.TW
        if (H, W) != (2 * TH + 2, 2 * TW + 2):  # an odd output side: its last tiles read a row of zeros
            padded = scratch("winograd_x", (k, C, 2 * TH + 2, 2 * TW + 2), x.dtype, zero=True)
            padded[:, :, :H, :W] = x
            x = padded
        sN, sC, sH, sW = x.strides
        d = scratch("winograd_tiles", (4, 4, C * k * TH * TW), x.dtype)
        np.copyto(d.reshape(4, 4, C, k, TH, TW), as_strided(x, (4, 4, C, k, TH, TW), (sH, sW, sC, sN, 2 * sH, 2 * sW)))
        rows = scratch("winograd_rows", d.shape, x.dtype)
        _input_transform(d, rows)
        V = scratch("winograd_v", d.shape, x.dtype)
        _input_transform(rows.transpose(1, 0, 2), V.transpose(1, 0, 2))
        return V.reshape(16, C, -1)

    def transformed_gradients(self, dy):
        """Z = A dY A^T of every 2x2 block dY of dy (samples, O, OH, OW): (16, O, samples*TH*TW).

        A = [[1, 0], [1, 1], [1, -1], [0, -1]] takes a block's rows (r0, r1) to
        (r0, r0 + r1, r0 - r1, -r1), and then its columns alike.
        """
        k, O, OH, OW = dy.shape
        TH, TW = self.TH, self.TW
        blocks = scratch("winograd_blocks", (2, 2, O, k, TH, TW), dy.dtype, zero=bool(OH % 2 or OW % 2))
        for a in range(2):
            for b in range(2):
                block = dy[:, :, a::2, b::2]
                blocks[a, b, :, :, : block.shape[2], : block.shape[3]] = block.transpose(1, 0, 2, 3)
        blocks = blocks.reshape(2, 2, -1)
        rows = scratch("winograd_grad_rows", (4, 2, blocks.shape[2]), dy.dtype)
        _gradient_transform(blocks, rows)
        Z = scratch("winograd_z", (4, 4, blocks.shape[2]), dy.dtype)
        _gradient_transform(rows.transpose(1, 0, 2), Z.transpose(1, 0, 2))
        return Z.reshape(16, O, -1)

    def write_outputs(self, M, y):
        """y (samples, O, OH, OW) = A^T m A of the products M (16, O, samples*TH*TW).

        A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] takes rows (m0, m1, m2, m3) to
        (m0 + m1 + m2, m1 - m2 - m3), and then the columns alike.
        """
        k, O = y.shape[:2]
        M = M.reshape(4, 4, -1)
        rows = scratch("winograd_out_rows", (2, 4, M.shape[2]), M.dtype)
        _output_transform(M, rows)
        Y = scratch("winograd_y", (2, 2, M.shape[2]), M.dtype)
        _output_transform(rows.transpose(1, 0, 2), Y.transpose(1, 0, 2))
        Y = Y.reshape(2, 2, O, k, self.TH, self.TW)
        for a in range(2):
            for b in range(2):
                out = y[:, :, a::2, b::2]
                out[...] = Y[a, b, :, :, : out.shape[2], : out.shape[3]].transpose(1, 0, 2, 3)


def _input_transform(d, out):
    """out[0..3] = B^T applied along d's first axis (d[0..3] a tile's four rows, or columns)."""
    np.subtract(d[0], d[2], out=out[0])
    np.add(d[1], d[2], out=out[1])
    np.subtract(d[2], d[1], out=out[2])
    np.subtract(d[1], d[3], out=out[3])


def _gradient_transform(d, out):
    """out[0..3] = A applied along d's first axis (d[0..1] a block's two rows, or columns)."""
    np.copyto(out[0], d[0])
    np.add(d[0], d[1], out=out[1])
    np.subtract(d[0], d[1], out=out[2])
    np.negative(d[1], out=out[3])


def _output_transform(m, out):
    """out[0..1] = A^T applied along m's first axis (m[0..3] four rows, or columns)."""
    np.add(m[0], m[1], out=out[0])
    out[0] += m[2]
    np.subtract(m[1], m[2], out=out[1])
    out[1] -= m[3]


def correlate(x, w, b, out):
    """out (N, O, H-2, W-2) = the valid correlation of x (N, C, H, W) with w (O, C, 3, 3), plus b."""
    O, C = w.shape[:2]
    tiles = _Tiles(x.shape)
    # U = G g G^T of every filter: (16, O, C)
    U = (_FILTER @ w.reshape(O * C, 9).T).reshape(16, O, C).astype(out.dtype)

    def work(n):
        V = tiles.transformed_inputs(x[n])
        M = scratch("winograd_m", (16, O, V.shape[2]), out.dtype)
        np.matmul(U, V, out=M)
        tiles.write_outputs(M, out[n])
        if b is not None:
            out[n] += b[:, None, None]

    on_tiles(work, tiles.batches, w.size)
    return out


def weight_gradient(x, dy):
    """dL/dw (O, C, 3, 3) of the valid correlation of x (N, C, H, W) giving dy (N, O, H-2, W-2)."""
    C, O = x.shape[1], dy.shape[1]
    tiles = _Tiles(x.shape)
    dtype = np.result_type(x, dy)

    def work(n):
        V = tiles.transformed_inputs(x[n])
        Z = tiles.transformed_gradients(dy[n])
        return np.matmul(Z, V.transpose(0, 2, 1))  # (16, O, C): Z * V summed over the tiles

    parts = on_tiles(work, tiles.batches, O * C * 9)
    if not parts:  # an empty batch: the gradient is an empty sum
        return np.zeros((O, C, 3, 3), dtype)
    dU = sum(parts).reshape(16, O * C)
    return (_FILTER.T @ dU).T.reshape(O, C, 3, 3).astype(dtype)  # G^T dU G, filter by filter
