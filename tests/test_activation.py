"""LeakyReLU, Sigmoid, Tanh and GELU (exact and tanh form): forward and backward against
PyTorch and by finite differences on every device in float32 and float64; the NumPy erf
against math.erf; NaN and extreme inputs; bad arguments refused."""
import math

import numpy as np
import pytest

from gpucnn import functional as F, nn
from gpucnn.backends.cpu import activation as cpu_activation
from gpucnn.cuda import as_numpy, device_of, to_device
from gradcheck import check_backward

TOLERANCES = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=1e-4, atol=1e-6)}

LAYERS = {  # our layer, torch's layer (by name and arguments), functional form
    "leaky_relu": (lambda: nn.LeakyReLU(), ("LeakyReLU",), lambda x: F.leaky_relu(x)),
    "leaky_relu-0.2": (lambda: nn.LeakyReLU(0.2), ("LeakyReLU", 0.2), lambda x: F.leaky_relu(x, 0.2)),
    "sigmoid": (lambda: nn.Sigmoid(), ("Sigmoid",), F.sigmoid),
    "tanh": (lambda: nn.Tanh(), ("Tanh",), F.tanh),
    "gelu": (lambda: nn.GELU(), ("GELU",), F.gelu),
    "gelu-tanh": (lambda: nn.GELU("tanh"), ("GELU", "tanh"), lambda x: F.gelu(x, "tanh")),
}


def away_from_zero(shape, seed=0):
    """|x| in [0.1, 4]: LeakyReLU's kink at 0 never within a finite difference's step."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 4, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, torch_layer, functional", LAYERS.values(), ids=LAYERS.keys())
def test_matches_torch(device, make, torch_layer, functional, dtype):
    torch = pytest.importorskip("torch")
    x = np.concatenate([away_from_zero(60), [0.0, -30.0, 30.0, -800.0, 800.0]]).reshape(5, 13).astype(dtype)
    m = make()
    y = m(to_device(x, device))
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn, torch_layer[0])(*torch_layer[1:])(xt)
    assert device_of(y) == device and y.dtype == dtype
    np.testing.assert_allclose(as_numpy(y), yt.detach().numpy(), **TOLERANCES[dtype])
    np.testing.assert_array_equal(as_numpy(functional(to_device(x, device))), as_numpy(y))
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    yt.backward(torch.from_numpy(dy))
    dx = m.backward(to_device(dy, device))
    assert device_of(dx) == device and dx.dtype == dtype
    np.testing.assert_allclose(as_numpy(dx), xt.grad.numpy(), **TOLERANCES[dtype])


@pytest.mark.parametrize("make", [v[0] for v in LAYERS.values()], ids=LAYERS.keys())
def test_backward_matches_finite_differences(device, make):
    check_backward(make(), to_device(away_from_zero((3, 4, 5)), device))


@pytest.mark.parametrize("make", [v[0] for v in LAYERS.values()], ids=LAYERS.keys())
def test_nan_stays_nan(device, make):
    x = to_device(np.array([np.nan, 1.0, -1.0]), device)
    y = as_numpy(make()(x))
    assert np.isnan(y[0]) and not np.isnan(y[1:]).any()


def test_numpy_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-7, 7, 200001), [0.0, -0.0, 1e-300, 5.999999, 6.0, 6.000001, np.inf, -np.inf]])
    want = np.array([math.erf(v) for v in x])
    got = cpu_activation.erf(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-15)
    small = x[np.abs(x) < 1e-3]  # relatively accurate near 0, where erf(x) ~ 2x/sqrt(pi)
    np.testing.assert_allclose(cpu_activation.erf(small), [math.erf(v) for v in small], rtol=4e-15, atol=0)
    assert cpu_activation.erf(np.array([np.nan], np.float32)).dtype == np.float32


@pytest.mark.parametrize("make, message", [
    (lambda: nn.LeakyReLU("0.1"), "LeakyReLU: negative_slope must be a finite number, but got negative_slope='0.1'"),
    (lambda: nn.LeakyReLU(float("inf")), "LeakyReLU: negative_slope must be a finite number"),
    (lambda: nn.GELU("erf"), "GELU: approximate must be 'none' or 'tanh', but got approximate='erf'"),
    (lambda: nn.Sigmoid()(np.ones(3, np.int64)), "Sigmoid: expected input of dtype float32 or float64, but got int64"),
    (lambda: nn.Tanh().backward(np.ones(3)), "Tanh: backward called before forward"),
])
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises((ValueError, RuntimeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_bad_dy_is_a_clear_error():
    m = nn.GELU()
    m(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"GELU.backward: expected dy of the output's shape \[2, 3\] and dtype float64"):
        m.backward(np.ones((2, 3), np.float32))
