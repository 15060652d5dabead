"""The NumPy backend's ops equal their definitions written as plain loops, on geometries
drawn by Hypothesis (any batch, channels, sizes, kernels, strides and paddings that fit).

The backend is vectorized and tiled for speed, and every CUDA kernel is checked against
it, so its index arithmetic is checked here against the most literal form of each op.
"""
import numpy as np
from hypothesis import given, settings, strategies as st

from gpucnn.backends import cpu
from gpucnn.checks import output_size



@st.composite
def geometries(draw, padded=True):
    """(N, C, H, W), (KH, KW), (SH, SW), (PH, PW) with at least one window."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    SH, SW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    PH, PW = (draw(st.integers(0, 3)), draw(st.integers(0, 3))) if padded else (0, 0)
    H = draw(st.integers(max(1, KH - 2 * PH), 10))
    W = draw(st.integers(max(1, KW - 2 * PW), 10))
    return (N, C, H, W), (KH, KW), (SH, SW), (PH, PW)


def conv_windows(x_shape, kernel, stride, padding):
    """Every (oh, ow, ky, kx, ih, iw) where output (oh, ow) reads input (ih, iw) through (ky, kx)."""
    (_, _, H, W), (KH, KW), (SH, SW), (PH, PW) = x_shape, kernel, stride, padding
    for oh in range(output_size(H, KH, SH, PH)):
        for ow in range(output_size(W, KW, SW, PW)):
            for ky in range(KH):
                for kx in range(KW):
                    ih, iw = oh * SH + ky - PH, ow * SW + kx - PW
                    if 0 <= ih < H and 0 <= iw < W:
                        yield oh, ow, ky, kx, ih, iw


@settings(max_examples=120, deadline=None, derandomize=True)
@given(geometries(), st.integers(1, 3), st.booleans())
def test_conv2d_ops_equal_their_loops(geometry, O, with_bias):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((O, x_shape[1]) + kernel)
    b = rng.standard_normal(O) if with_bias else None
    y = cpu.conv2d_forward(x, w, b, stride, padding)
    dy = rng.standard_normal(y.shape)

    want_y = np.zeros(y.shape) + (b[:, None, None] if with_bias else 0)
    want_dx, want_dw = np.zeros(x.shape), np.zeros(w.shape)
    for oh, ow, ky, kx, ih, iw in conv_windows(x_shape, kernel, stride, padding):
        want_y[:, :, oh, ow] += x[:, :, ih, iw] @ w[:, :, ky, kx].T
        want_dx[:, :, ih, iw] += dy[:, :, oh, ow] @ w[:, :, ky, kx]
        want_dw[:, :, ky, kx] += dy[:, :, oh, ow].T @ x[:, :, ih, iw]

    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.conv2d_backward_data(dy, w, x.shape, stride, padding), want_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.conv2d_backward_weight(x, dy, w.shape, stride, padding), want_dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.conv2d_backward_bias(dy), dy.sum(axis=(0, 2, 3)), rtol=1e-12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(geometries(padded=False))
def test_pool2d_ops_equal_their_loops(geometry):
    x_shape, kernel, stride, _ = geometry
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
    np.testing.assert_allclose(y_avg, want_avg, rtol=1e-12)
    np.testing.assert_allclose(cpu.max_pool2d_backward(dy, argmax, x_shape, kernel, stride), want_dx_max, rtol=1e-12)
    np.testing.assert_allclose(cpu.avg_pool2d_backward(dy, x_shape, kernel, stride), want_dx_avg, rtol=1e-12, atol=1e-15)
