"""The NumPy backend's convolution ops against torch.nn.functional.conv2d and its autograd:
dilation, groups (depthwise included) and their mixes with stride and padding, float64
to 1e-12 and float32 to float32 rounding. Skipped where PyTorch is not installed."""
import numpy as np
import pytest

from gpucnn.backends import cpu
from gpucnn.checks import output_size

torch = pytest.importorskip("torch")

# (N, C, H, W), (O, KH, KW), stride, padding, dilation, groups
CASES = {
    "dilation 2": ((2, 3, 9, 8), (4, 3, 3), (1, 1), (2, 2), (2, 2), 1),
    "dilation (3, 2), stride (2, 3)": ((2, 2, 13, 14), (3, 3, 2), (2, 3), (1, 0), (3, 2), 1),
    "groups 2": ((2, 4, 7, 7), (6, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    "groups 3, stride 2, dilation 2": ((1, 6, 11, 10), (3, 3, 3), (2, 2), (2, 1), (2, 2), 3),
    "depthwise 3x3": ((2, 5, 8, 8), (5, 3, 3), (1, 1), (1, 1), (1, 1), 5),
    "depthwise, multiplier 2, stride 2": ((2, 3, 9, 9), (6, 5, 5), (2, 2), (2, 2), (1, 1), 3),
    "depthwise 1D (H = 1), dilation 4": ((2, 4, 1, 40), (4, 1, 3), (1, 1), (0, 4), (1, 4), 4),
    "dilation past the input's padding: rows no window reads": ((1, 2, 12, 12), (2, 3, 3), (3, 3), (0, 0), (2, 3), 2),
}


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_conv2d_ops_match_pytorch(case, dtype, tolerance):
    x_shape, (O, KH, KW), stride, padding, dilation, groups = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((O, x_shape[1] // groups, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    OH, OW = (output_size(n, d * (k - 1) + 1, s, p) for n, k, s, p, d in
              zip(x_shape[2:], (KH, KW), stride, padding, dilation))
    dy = rng.standard_normal((x_shape[0], O, OH, OW)).astype(dtype)

    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    ty.backward(torch.from_numpy(dy))

    geometry = (stride, padding, dilation, groups)
    close = dict(rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(cpu.conv2d_forward(x, w, b, *geometry), ty.detach().numpy(), **close)
    np.testing.assert_allclose(cpu.conv2d_backward_data(dy, w, x_shape, *geometry), tx.grad.numpy(), **close)
    np.testing.assert_allclose(cpu.conv2d_backward_weight(x, dy, w.shape, *geometry), tw.grad.numpy(), **close)
    np.testing.assert_allclose(cpu.conv2d_backward_bias(dy), tb.grad.numpy(), **close)
