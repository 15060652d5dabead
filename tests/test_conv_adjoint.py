"""Convolution's backward ops are its adjoints: for every x, w, g of matching shapes,

    <conv(x, w), g> = <x, backward_data(g, w)> = <w, backward_weight(x, g)>.

An exact algebraic identity (no finite differences), so it is checked in float64 to
1e-12 over many geometries, straight on the backend ops.
"""
import numpy as np
import pytest

from gpucnn.backends import cpu
from gpucnn.checks import output_size

# (N, C, H, W), (O, KH, KW), stride, padding
GEOMETRIES = [
    ((1, 1, 5, 5), (1, 3, 3), (1, 1), (0, 0)),
    ((2, 3, 7, 6), (4, 3, 2), (1, 1), (1, 1)),
    ((2, 3, 7, 6), (4, 3, 2), (2, 3), (0, 1)),
    ((1, 5, 9, 9), (2, 1, 1), (2, 2), (0, 0)),
    ((3, 2, 4, 5), (3, 4, 5), (1, 1), (0, 0)),  # kernel = input
    ((2, 1, 10, 8), (2, 2, 2), (3, 4), (0, 0)),  # stride > kernel
    ((1, 2, 3, 3), (2, 2, 3), (1, 2), (3, 4)),  # padding >= kernel
    ((2, 3, 8, 11), (2, 3, 4), (3, 2), (1, 2)),  # (H + 2P - K) % S != 0
    ((1, 2, 1, 13), (3, 1, 5), (1, 3), (0, 2)),  # a 1D layer's H = 1
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", GEOMETRIES)
def test_backward_data_and_weight_are_adjoint_to_forward(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(0)
    N, C, H, W = x_shape
    O, KH, KW = w_shape
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((O, C, KH, KW))
    OH = output_size(H, KH, stride[0], padding[0])
    OW = output_size(W, KW, stride[1], padding[1])
    g = rng.standard_normal((N, O, OH, OW))

    y = cpu.conv2d_forward(x, w, None, stride, padding)
    assert y.shape == g.shape
    dx = cpu.conv2d_backward_data(g, w, x.shape, stride, padding)
    dw = cpu.conv2d_backward_weight(x, g, w.shape, stride, padding)
    assert dx.shape == x.shape and dw.shape == w.shape

    lhs = np.vdot(y, g)
    np.testing.assert_allclose(np.vdot(x, dx), lhs, rtol=1e-12)
    np.testing.assert_allclose(np.vdot(w, dw), lhs, rtol=1e-12)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", GEOMETRIES[:4])
def test_bias_gradient_is_adjoint_to_adding_the_bias(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((w_shape[0], x_shape[1]) + w_shape[1:])
    b = rng.standard_normal(w_shape[0])
    added = cpu.conv2d_forward(x, w, b, stride, padding) - cpu.conv2d_forward(x, w, None, stride, padding)
    g = rng.standard_normal(added.shape)
    np.testing.assert_allclose(np.vdot(b, cpu.conv2d_backward_bias(g)), np.vdot(added, g), rtol=1e-12)
