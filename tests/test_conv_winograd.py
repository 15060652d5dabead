"""The NumPy path's Winograd F(2x2, 3x3) convolutions (gpucnn/backends/cpu/winograd.py) give
the convolution's sums: every pass, odd and even sizes, batches cut anywhere, two threads."""
import numpy as np
import pytest

from gpucnn.backends import cpu
from gpucnn.backends.cpu import _common, winograd

SHAPES = [  # x shape, output channels, padding
    ((3, 5, 8, 8), 4, (1, 1)),      # even outputs: whole tiles
    ((2, 4, 7, 9), 6, (1, 1)),      # odd outputs: the last tiles half cut
    ((1, 3, 5, 4), 2, (0, 0)),      # no padding: 3x2 outputs
    ((2, 2, 3, 3), 3, (2, 2)),      # more padding than input
]


def _passes(x, w, b, padding, dy):
    return (cpu.conv2d_forward(x, w, b, (1, 1), padding), cpu.conv2d_backward_data(dy, w, x.shape, (1, 1), padding),
            cpu.conv2d_backward_weight(x, dy, w.shape, (1, 1), padding))


@pytest.mark.parametrize("x_shape, O, padding", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_pass_equals_the_direct_convolution(monkeypatch, x_shape, O, padding, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w, b = rng.standard_normal((O, x_shape[1], 3, 3)), rng.standard_normal(O)
    y_shape = (x_shape[0], O, x_shape[2] + 2 * padding[0] - 2, x_shape[3] + 2 * padding[1] - 2)
    dy = rng.standard_normal(y_shape)
    for name in ("MIN_CHANNEL_PAIRS", "WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS"):
        monkeypatch.setattr(winograd, name, 10**9)
    want = _passes(x, w, b, padding, dy)  # float64 im2col
    for name in ("MIN_CHANNEL_PAIRS", "WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS"):
        monkeypatch.setattr(winograd, name, 1)
    monkeypatch.setattr(winograd, "TILES", 3)  # batches of one or two samples
    monkeypatch.setattr(_common, "_threads", 2)
    assert winograd.applies(w.shape, (1, 1), (1, 1), 1) and winograd.applies(w.shape, (1, 1), (1, 1), 1, True)
    got = _passes(*(a.astype(dtype) for a in (x, w, b)), padding, dy.astype(dtype))
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for name, g, wnt in zip(("forward", "backward_data", "backward_weight"), got, want):
        assert g.dtype == dtype and g.shape == wnt.shape
        np.testing.assert_allclose(g, wnt, err_msg=name, **tolerance)


def test_only_thick_3x3_stride_1_layers_take_it():
    thick = (128, 64, 3, 3)
    assert winograd.applies(thick, (1, 1), (1, 1), 1) and winograd.applies(thick, (1, 1), (1, 1), 1, True)
    assert winograd.applies((64, 64, 3, 3), (1, 1), (1, 1), 1)
    assert not winograd.applies((64, 64, 3, 3), (1, 1), (1, 1), 1, True)  # too few channel pairs to pay
    assert not winograd.applies((32, 64, 3, 3), (1, 1), (1, 1), 1)
    assert not winograd.applies(thick, (2, 2), (1, 1), 1)
    assert not winograd.applies(thick, (1, 1), (2, 2), 1)
    assert not winograd.applies((128, 32, 3, 3), (1, 1), (1, 1), 2)
    assert not winograd.applies((128, 64, 5, 5), (1, 1), (1, 1), 1)


def test_an_empty_batch_has_zero_weight_gradient(monkeypatch):
    monkeypatch.setattr(winograd, "MIN_CHANNEL_PAIRS", 1)
    monkeypatch.setattr(winograd, "WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS", 1)
    x, dy = np.zeros((0, 2, 6, 6), np.float32), np.zeros((0, 3, 6, 6), np.float32)
    assert cpu.conv2d_forward(x, np.ones((3, 2, 3, 3), np.float32), None, (1, 1), (1, 1)).shape == (0, 3, 6, 6)
    dw = cpu.conv2d_backward_weight(x, dy, (3, 2, 3, 3), (1, 1), (1, 1))
    assert dw.shape == (3, 2, 3, 3) and not dw.any()
