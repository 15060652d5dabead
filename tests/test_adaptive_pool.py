"""AdaptiveAvgPool2d against PyTorch and against its definition written as loops (windows
[floor(o*I/O), ceil((o+1)*I/O)), which differ in size and overlap), forward and backward, on
every device in float32 and float64; backward by finite differences; bad sizes refused."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gpucnn
from gpucnn import nn
from gpucnn.backends import cpu
from gpucnn.cuda import as_numpy, device_of, to_device
from gradcheck import check_backward

TOLERANCES = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}

CASES = {  # input shape, output_size
    "global": ((2, 3, 5, 7), 1),
    "divisible": ((1, 2, 6, 8), (3, 4)),
    "overlapping-windows": ((2, 1, 5, 7), (3, 4)),
    "upsampling": ((1, 2, 2, 3), (5, 4)),
    "none-keeps-height": ((2, 2, 4, 9), (None, 2)),
    "none-keeps-width": ((1, 1, 7, 3), (2, None)),
    "identity": ((1, 2, 3, 3), 3),
}


def by_definition(x, size):
    """The windows of torch's AdaptivePooling.h, one output element at a time."""
    N, C, H, W = x.shape
    OH, OW = size
    y = np.zeros((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            h0, h1 = oh * H // OH, -(-(oh + 1) * H // OH)
            w0, w1 = ow * W // OW, -(-(ow + 1) * W // OW)
            y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def full_size(x_shape, output_size):
    size = output_size if isinstance(output_size, tuple) else (output_size, output_size)
    return tuple(x_shape[2 + i] if s is None else s for i, s in enumerate(size))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, output_size", CASES.values(), ids=CASES.keys())
def test_forward_and_backward_match_the_definition(device, shape, output_size, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    m = nn.AdaptiveAvgPool2d(output_size)
    y = m(to_device(x.astype(dtype), device))
    assert device_of(y) == device and y.dtype == dtype
    np.testing.assert_allclose(as_numpy(y), by_definition(x, full_size(shape, output_size)), **TOLERANCES[dtype])
    # backward is the adjoint of forward: <m(x), dy> = <x, m.backward(dy)>
    dy = rng.standard_normal(y.shape)
    dx = m.backward(to_device(dy.astype(dtype), device))
    assert device_of(dx) == device and dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(np.sum(as_numpy(dx) * x), np.sum(by_definition(x, y.shape[2:]) * dy),
                               **TOLERANCES[dtype])


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.integers(1, 9))
def test_every_geometry_matches_the_definition(cuda_device, H, W, OH, OW):
    """Shrinking, growing (windows repeating rows) and mixed: the kernels' covering ranges."""
    x = np.random.default_rng(H * 1000 + W * 100 + OH * 10 + OW).standard_normal((1, 2, H, W))
    m = nn.AdaptiveAvgPool2d((OH, OW))
    y = m(to_device(x, cuda_device))
    np.testing.assert_allclose(as_numpy(y), by_definition(x, (OH, OW)), rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx = as_numpy(m.backward(to_device(dy, cuda_device)))
    want = adjoint_by_definition(dy, x.shape)  # the adjoint, element by element
    np.testing.assert_allclose(dx, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.adaptive_avg_pool2d_backward(dy, x.shape), want, rtol=1e-12, atol=1e-12)


def adjoint_by_definition(dy, x_shape):
    """dx[ih, iw] = the sum of dy / size over the windows holding (ih, iw)."""
    H, W = x_shape[2:]
    OH, OW = dy.shape[2:]
    dx = np.zeros(x_shape)
    for oh in range(OH):
        for ow in range(OW):
            h0, h1 = oh * H // OH, -(-(oh + 1) * H // OH)
            w0, w1 = ow * W // OW, -(-(ow + 1) * W // OW)
            dx[:, :, h0:h1, w0:w1] += dy[:, :, oh:oh + 1, ow:ow + 1] / ((h1 - h0) * (w1 - w0))
    return dx


def test_window_bounds_past_32_bits(cuda_device):
    """o*H reaches 2^32 (70000 rows to 65536): the kernels' window bounds take their 64-bit
    division there, the 32-bit one below."""
    H, OH = 70000, 65536
    assert (OH - 1) * H >= 2**32 > 60000 * H
    x = np.random.default_rng(3).standard_normal((1, 1, H, 1))
    m = nn.AdaptiveAvgPool2d((OH, 1))
    y = m(to_device(x, cuda_device))
    np.testing.assert_allclose(as_numpy(y), by_definition(x, (OH, 1)), rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(4).standard_normal(y.shape)
    np.testing.assert_allclose(as_numpy(m.backward(to_device(dy, cuda_device))), adjoint_by_definition(dy, x.shape),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, output_size", CASES.values(), ids=CASES.keys())
def test_matches_torch(device, shape, output_size, dtype):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    m = nn.AdaptiveAvgPool2d(output_size)
    y = m(to_device(x, device))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.AdaptiveAvgPool2d(output_size)(xt)
    np.testing.assert_allclose(as_numpy(y), yt.detach().numpy(), **TOLERANCES[dtype])
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(as_numpy(m.backward(to_device(dy, device))), xt.grad.numpy(), **TOLERANCES[dtype])


@pytest.mark.parametrize("shape, output_size", CASES.values(), ids=CASES.keys())
def test_backward_matches_finite_differences(device, shape, output_size):
    check_backward(nn.AdaptiveAvgPool2d(output_size), to_device(np.random.default_rng(3).standard_normal(shape), device))


def test_functional_form_and_a_batch_of_none():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    np.testing.assert_allclose(gpucnn.functional.adaptive_avg_pool2d(x, 1), x.mean(axis=(2, 3), keepdims=True))
    assert nn.AdaptiveAvgPool2d(2)(np.zeros((0, 3, 5, 5))).shape == (0, 3, 2, 2)


@pytest.mark.parametrize("output_size", [0, -1, (2, 0), (1, 2, 3), 1.5, "2", True])
def test_bad_output_size_is_a_clear_error(output_size):
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d: output_size must be a positive int"):
        nn.AdaptiveAvgPool2d(output_size)


def test_unbatched_input_as_torch(device):
    x = np.random.default_rng(0).standard_normal((3, 5, 7))
    m = nn.AdaptiveAvgPool2d((2, 3))
    y = m(to_device(x, device))
    np.testing.assert_allclose(as_numpy(y), by_definition(x[None], (2, 3))[0], rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(1).standard_normal((3, 2, 3))
    dx = m.backward(to_device(dy, device))
    assert dx.shape == x.shape and device_of(dx) == device
    np.testing.assert_allclose(np.sum(as_numpy(dx) * x), np.sum(as_numpy(y) * dy), rtol=1e-12)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d: expected 3D \(C, H, W\) or 4D \(N, C, H, W\) input"):
        nn.AdaptiveAvgPool2d(1)(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d: expected input with non-zero height and width"):
        nn.AdaptiveAvgPool2d(1)(np.zeros((1, 3, 0, 5)))
    m = nn.AdaptiveAvgPool2d(2)
    m(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"expected dy of the output's shape \[1, 1, 2, 2\]"):
        m.backward(np.zeros((1, 1, 4, 4)))
