"""gpucnn.functional gives what the modules give, and what torch.nn.functional gives, on
every device of the `device` fixture, its results staying on that device."""
import numpy as np
import pytest

import gpucnn
from gpucnn import functional as F, nn
from gpucnn.cuda import as_numpy, device_of, to_device


def tie_free(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.linspace(-2, 2, int(np.prod(shape)))).reshape(shape)


@pytest.fixture(autouse=True)
def _seeded():
    gpucnn.manual_seed(0)


CONV_CASES = {
    "conv1d": (F.conv1d, lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 9)),
    "conv2d": (F.conv2d, lambda: nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(2, 0)), (2, 2, 5, 7)),
    "conv2d-no-bias": (F.conv2d, lambda: nn.Conv2d(2, 3, 1, bias=False), (1, 2, 3, 3)),
}

POOL_CASES = {
    "max_pool1d": (F.max_pool1d, nn.MaxPool1d, (2, 3, 9), 3, 2),
    "max_pool2d": (F.max_pool2d, nn.MaxPool2d, (2, 3, 7, 6), (2, 3), None),
    "avg_pool1d": (F.avg_pool1d, nn.AvgPool1d, (2, 3, 9), 2, None),
    "avg_pool2d": (F.avg_pool2d, nn.AvgPool2d, (2, 3, 7, 6), 3, (2, 1)),
}


def conv_call(fn, m, x):
    return fn(x, m.weight.data, None if m.bias is None else m.bias.data, stride=m.stride, padding=m.padding)


def on_host(y, device):
    """y as NumPy, after checking that it stayed on device."""
    assert device_of(y) == device, f"result on {device_of(y)}, expected {device}"
    return as_numpy(y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn, make, shape", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_equals_module(device, fn, make, shape, dtype):
    m = (make().double() if dtype == np.float64 else make()).to(device)
    x = to_device(tie_free(shape).astype(dtype), device)
    y = conv_call(fn, m, x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(on_host(y, device), as_numpy(m(x)))


@pytest.mark.parametrize("fn, module, shape, kernel, stride", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_pool_equals_module(device, fn, module, shape, kernel, stride):
    x = to_device(tie_free(shape).astype(np.float32), device)
    y = fn(x, kernel, stride)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(on_host(y, device), as_numpy(module(kernel, stride)(x)))


def test_relu_and_linear_equal_modules(device):
    x = to_device(tie_free((4, 6)), device)
    np.testing.assert_array_equal(on_host(F.relu(x), device), as_numpy(nn.ReLU()(x)))
    m = nn.Linear(6, 3).double().to(device)
    np.testing.assert_array_equal(on_host(F.linear(x, m.weight.data, m.bias.data), device), as_numpy(m(x)))
    np.testing.assert_allclose(on_host(F.linear(x, m.weight.data), device), as_numpy(m(x) - m.bias.data), rtol=1e-14)


def test_losses_equal_modules(device):
    rng = np.random.default_rng(1)
    logits, target = to_device(rng.standard_normal((5, 4)), device), to_device(rng.integers(0, 4, size=5), device)
    assert F.cross_entropy(logits, target) == nn.CrossEntropyLoss()(logits, target)
    x, t = to_device(rng.standard_normal((3, 2)), device), to_device(rng.standard_normal((3, 2)), device)
    assert F.mse_loss(x, t) == nn.MSELoss()(x, t)


@pytest.fixture
def torch():
    """PyTorch, the oracle; only these tests skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.mark.parametrize("fn, make, shape", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_equals_torch(torch, device, fn, make, shape):
    m = make().double()
    x = tie_free(shape)
    bias = None if m.bias is None else torch.from_numpy(m.bias.data)
    want = getattr(torch.nn.functional, fn.__name__)(
        torch.from_numpy(x), torch.from_numpy(m.weight.data), bias, stride=m.stride, padding=m.padding)
    y = conv_call(fn, m.to(device), to_device(x, device))
    np.testing.assert_allclose(on_host(y, device), want.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn, module, shape, kernel, stride", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_pool_equals_torch(torch, device, fn, module, shape, kernel, stride):
    x = tie_free(shape)
    want = getattr(torch.nn.functional, fn.__name__)(torch.from_numpy(x), kernel, stride)
    np.testing.assert_allclose(on_host(fn(to_device(x, device), kernel, stride), device), want.numpy(), rtol=1e-14)


def test_relu_linear_and_losses_equal_torch(torch, device):
    TF, rng = torch.nn.functional, np.random.default_rng(2)
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    xd, wd, bd = (to_device(a, device) for a in (x, w, b))
    np.testing.assert_array_equal(on_host(F.relu(xd), device), TF.relu(torch.from_numpy(x)).numpy())
    np.testing.assert_allclose(on_host(F.linear(xd, wd, bd), device),
                               TF.linear(*map(torch.from_numpy, (x, w, b))).numpy(), rtol=1e-13)
    target = rng.integers(0, 6, size=4)
    want_ce = TF.cross_entropy(torch.from_numpy(x), torch.from_numpy(target)).item()
    np.testing.assert_allclose(on_host(F.cross_entropy(xd, to_device(target, device)), device), want_ce, rtol=1e-13)
    want_mse = TF.mse_loss(torch.from_numpy(x), torch.from_numpy(2 * x)).item()
    np.testing.assert_allclose(on_host(F.mse_loss(xd, 2 * xd), device), want_mse, rtol=1e-13)
