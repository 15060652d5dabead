"""AdaptiveAvgPool2d against PyTorch and against its definition written as loops (windows
[floor(o*I/O), ceil((o+1)*I/O)), which differ in size and overlap), forward and backward, on
every device in float32 and float64; backward by finite differences; bad sizes refused."""
import numpy as np
import pytest

import gpucnn
from gpucnn import nn
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


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d: expected 4D input \(N, C, H, W\)"):
        nn.AdaptiveAvgPool2d(1)(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d: expected input with non-zero height and width"):
        nn.AdaptiveAvgPool2d(1)(np.zeros((1, 3, 0, 5)))
    m = nn.AdaptiveAvgPool2d(2)
    m(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"expected dy of the output's shape \[1, 1, 2, 2\]"):
        m.backward(np.zeros((1, 1, 4, 4)))
