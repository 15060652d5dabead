"""The NumPy backend's ops equal their definitions written as plain loops, on geometries
drawn by Hypothesis (any batch, channels, sizes, kernels, strides, paddings, dilations and
groups that fit), and backward-data equals the seeds' spread-and-full-convolution.

The backend is vectorized and tiled for speed, and every CUDA kernel is checked against
it, so its index arithmetic is checked here against the most literal form of each op.
"""
import numpy as np
from hypothesis import given, settings, strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from gpucnn.backends import cpu
from gpucnn.checks import output_size



@st.composite
def geometries(draw, padded=True, dilated=False):
    """(N, C, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW) with at least one window."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    SH, SW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    PH, PW = (draw(st.integers(0, 3)), draw(st.integers(0, 3))) if padded else (0, 0)
    DH, DW = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    EH, EW = DH * (KH - 1) + 1, DW * (KW - 1) + 1  # what a dilated filter spans
    H = draw(st.integers(max(1, EH - 2 * PH), max(1, EH - 2 * PH) + 7))
    W = draw(st.integers(max(1, EW - 2 * PW), max(1, EW - 2 * PW) + 7))
    return (N, C, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW)


@st.composite
def conv_geometries(draw):
    """A convolution's (N, C, H, W), (O, C/G, KH, KW), stride, padding, dilation, groups G."""
    (N, CG, H, W), kernel, stride, padding, dilation = draw(geometries(dilated=True))
    G, OG = draw(st.integers(1, 3)), draw(st.integers(1, 2))  # CG = 1: depthwise (times OG)
    return (N, G * CG, H, W), (G * OG, CG) + kernel, stride, padding, dilation, G


def conv_windows(x_shape, kernel, stride, padding, dilation=(1, 1)):
    """Every (oh, ow, ky, kx, ih, iw) where output (oh, ow) reads input (ih, iw) through (ky, kx)."""
    (_, _, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW) = x_shape, kernel, stride, padding, dilation
    for oh in range(output_size(H, DH * (KH - 1) + 1, SH, PH)):
        for ow in range(output_size(W, DW * (KW - 1) + 1, SW, PW)):
            for ky in range(KH):
                for kx in range(KW):
                    ih, iw = oh * SH + ky * DH - PH, ow * SW + kx * DW - PW
                    if 0 <= ih < H and 0 <= iw < W:
                        yield oh, ow, ky, kx, ih, iw


@settings(max_examples=150, deadline=None, derandomize=True)
@given(conv_geometries(), st.booleans())
def test_conv2d_ops_equal_their_loops(geometry, with_bias):
    x_shape, w_shape, stride, padding, dilation, groups = geometry
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if with_bias else None
    y = cpu.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    dy = rng.standard_normal(y.shape)

    want_y = np.zeros(y.shape) + (b[:, None, None] if with_bias else 0)
    want_dx, want_dw = np.zeros(x.shape), np.zeros(w.shape)
    OG, CG = w_shape[0] // groups, w_shape[1]
    for oh, ow, ky, kx, ih, iw in conv_windows(x_shape, w_shape[2:], stride, padding, dilation):
        for g in range(groups):  # group g: filters g*OG.. see only channels g*CG..
            o, c = slice(g * OG, (g + 1) * OG), slice(g * CG, (g + 1) * CG)
            want_y[:, o, oh, ow] += x[:, c, ih, iw] @ w[o, :, ky, kx].T
            want_dx[:, c, ih, iw] += dy[:, o, oh, ow] @ w[o, :, ky, kx]
            want_dw[o, :, ky, kx] += dy[:, o, oh, ow].T @ x[:, c, ih, iw]

    geometry = (stride, padding, dilation, groups)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.conv2d_backward_data(dy, w, x.shape, *geometry), want_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.conv2d_backward_weight(x, dy, w.shape, *geometry), want_dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.conv2d_backward_bias(dy), dy.sum(axis=(0, 2, 3)), rtol=1e-12)


def spread_and_convolve(dy, w, x_shape, stride, padding, dilation, groups):
    """dL/dx in the seeds' most literal form: spread dy onto the stride-1 grid (zeros in
    between), zero-pad it by E - 1 (E: the dilated filter's extent), and take the valid
    correlation of each dx channel c with the rotated dilated filters w[o, c] of c's group,
    summed over those o; dx is that full result's H x W inside the layer's padding P."""
    (N, C, H, W), (O, CG, KH, KW) = x_shape, w.shape
    (DH, DW), OG = dilation, O // groups
    dilated = np.zeros((O, CG, DH * (KH - 1) + 1, DW * (KW - 1) + 1))
    dilated[:, :, ::DH, ::DW] = w
    EH, EW = dilated.shape[2:]
    spread = cpu.spread_to_stride1(dy, stride)
    full = np.pad(spread, ((0, 0), (0, 0), (EH - 1, EH - 1), (EW - 1, EW - 1)))
    windows = sliding_window_view(full, (EH, EW), axis=(2, 3))  # (N, O, rows, cols, EH, EW)
    dx_full = np.zeros((N, C) + windows.shape[2:4])
    for c in range(C):
        g = c // CG
        for o in range(g * OG, (g + 1) * OG):
            dx_full[:, c] += np.einsum("nhwij,ij->nhw", windows[:, o], cpu.rot180(dilated[o, c - g * CG]))
    # The spread grid ends at the last window's corner; rows past it (no window reached them) stay 0.
    dx = np.zeros(x_shape)
    PH, PW = padding
    part = dx_full[:, :, PH : PH + H, PW : PW + W]
    dx[:, :, : part.shape[2], : part.shape[3]] = part
    return dx


@settings(max_examples=120, deadline=None, derandomize=True)
@given(conv_geometries())
def test_conv2d_backward_data_is_the_seeds_spread_and_full_convolution(geometry):
    """The backend's backward-data against the literal formulation it is derived from."""
    x_shape, w_shape, stride, padding, dilation, groups = geometry
    rng = np.random.default_rng(2)
    w = rng.standard_normal(w_shape)
    (N, _, H, W), (O, _, KH, KW) = x_shape, w_shape
    OH, OW = (output_size(n, d * (k - 1) + 1, s, p) for n, k, s, p, d in
              zip((H, W), (KH, KW), stride, padding, dilation))
    dy = rng.standard_normal((N, O, OH, OW))
    want = spread_and_convolve(dy, w, x_shape, stride, padding, dilation, groups)
    got = cpu.conv2d_backward_data(dy, w, x_shape, stride, padding, dilation, groups)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(geometries(padded=False))
def test_pool2d_ops_equal_their_loops(geometry):
    x_shape, kernel, stride, _, _ = geometry
    (KH, KW), (SH, SW) = kernel, stride
    rng = np.random.default_rng(1)
    x = rng.permutation(np.linspace(-1, 1, int(np.prod(x_shape)))).reshape(x_shape)  # no ties
    y_max, argmax = cpu.max_pool2d_forward(x, kernel, stride)
    y_avg = cpu.avg_pool2d_forward(x, kernel, stride)
    dy = rng.standard_normal(y_max.shape)

    want_max, want_avg = np.zeros(y_max.shape), np.zeros(y_max.shape)
    want_argmax = np.zeros(y_max.shape, dtype=np.int32)
    want_dx_max, want_dx_avg = np.zeros(x_shape), np.zeros(x_shape)
    for n in range(x_shape[0]):
        for c in range(x_shape[1]):
            for oh in range(y_max.shape[2]):
                for ow in range(y_max.shape[3]):
                    window = x[n, c, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW]
                    ky, kx = np.unravel_index(window.argmax(), window.shape)
                    want_max[n, c, oh, ow], want_avg[n, c, oh, ow] = window.max(), window.mean()
                    want_argmax[n, c, oh, ow] = ky * KW + kx
                    want_dx_max[n, c, oh * SH + ky, ow * SW + kx] += dy[n, c, oh, ow]
                    want_dx_avg[n, c, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW] += dy[n, c, oh, ow] / (KH * KW)

    np.testing.assert_array_equal(y_max, want_max)
    np.testing.assert_array_equal(argmax, want_argmax)
    np.testing.assert_allclose(y_avg, want_avg, rtol=1e-12, atol=1e-15)  # sums in another order: near 0, absolute
    np.testing.assert_allclose(cpu.max_pool2d_backward(dy, argmax, x_shape, kernel, stride), want_dx_max, rtol=1e-12)
    np.testing.assert_allclose(cpu.avg_pool2d_backward(dy, x_shape, kernel, stride), want_dx_avg, rtol=1e-12, atol=1e-15)
