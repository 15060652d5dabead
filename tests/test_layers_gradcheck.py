"""Every layer's and loss's backward against central differences, in float64, over the
shapes where convolution and pooling go wrong: batch 1, 1/3/5 channels, non-square
inputs and kernels, 1x1 kernels, kernel = input, stride > kernel, padding >= kernel,
and (H + 2P - K) not divisible by S (rows no window reaches). Each check runs on every
device of the `device` fixture: NumPy, and the CUDA kernels (emulated, or on a GPU)."""
import numpy as np
import pytest

import gpucnn
from gpucnn import nn
from gpucnn.cuda import as_numpy, to_device
from gradcheck import check_backward


@pytest.fixture(autouse=True)
def _seeded():
    gpucnn.manual_seed(0)


def check_on(device, module, x, *targets, **tolerances):
    """check_backward with the module, its input and its targets moved to device."""
    targets = [to_device(t, device) for t in targets]
    return check_backward(module.to(device), to_device(x, device), *targets, **tolerances)


def distinct(shape, seed=0):
    """Tie-free values (a shuffled linspace, as Chainer's pooling tests): max pooling has no kinks."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return rng.permutation(np.linspace(-1, 1, n)).reshape(shape)


def away_from_zero(shape, seed=0):
    """Values with |x| >= 0.1, so ReLU's kink at 0 is never within eps."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, size=shape)
    return x * rng.choice([-1.0, 1.0], size=shape)


# (N, C, H, W), out_channels, kernel_size, stride, padding
CONV2D_CASES = {
    "batch1-1ch": ((1, 1, 5, 5), 1, 3, 1, 0),
    "3ch-nonsquare": ((2, 3, 6, 9), 2, (2, 3), (1, 2), (1, 0)),
    "5ch-1x1": ((1, 5, 4, 3), 3, 1, 1, 0),
    "kernel-equals-input": ((2, 3, 4, 5), 2, (4, 5), 1, 0),
    "stride-gt-kernel": ((1, 3, 8, 7), 2, 2, 3, 0),
    "padding-ge-kernel": ((1, 1, 3, 4), 2, 2, 1, 3),
    "remainder-rows": ((2, 5, 8, 7), 2, 3, 3, 1),  # (8 + 2 - 3) % 3 = 1
    "nonsquare-stride-pad": ((1, 3, 7, 5), 2, (3, 2), (2, 3), (2, 1)),
}


@pytest.mark.parametrize("shape, out, kernel, stride, padding", CONV2D_CASES.values(), ids=CONV2D_CASES.keys())
def test_conv2d(device, shape, out, kernel, stride, padding):
    m = nn.Conv2d(shape[1], out, kernel, stride=stride, padding=padding).double()
    check_on(device, m, np.random.default_rng(1).standard_normal(shape))


def test_conv2d_without_bias(device):
    m = nn.Conv2d(3, 2, 3, stride=2, padding=1, bias=False).double()
    assert [name for name, _ in m.named_parameters()] == ["weight"]
    check_on(device, m, np.random.default_rng(1).standard_normal((2, 3, 5, 6)))


# (N, C, L), out_channels, kernel_size, stride, padding
CONV1D_CASES = {
    "batch1-1ch": ((1, 1, 7), 1, 3, 1, 0),
    "3ch-stride2": ((2, 3, 9), 2, 4, 2, 1),
    "5ch-1x1": ((1, 5, 6), 2, 1, 1, 0),
    "kernel-equals-input": ((2, 3, 5), 4, 5, 1, 0),
    "stride-gt-kernel": ((1, 3, 10), 2, 2, 3, 0),
    "padding-ge-kernel": ((1, 1, 3), 2, 2, 1, 2),
    "remainder": ((2, 3, 8), 2, 3, 3, 1),
}


@pytest.mark.parametrize("shape, out, kernel, stride, padding", CONV1D_CASES.values(), ids=CONV1D_CASES.keys())
def test_conv1d(device, shape, out, kernel, stride, padding):
    m = nn.Conv1d(shape[1], out, kernel, stride=stride, padding=padding).double()
    check_on(device, m, np.random.default_rng(1).standard_normal(shape))


# (N, C, H, W), kernel_size, stride (None: = kernel_size)
POOL2D_CASES = {
    "2x2-default-stride": ((1, 1, 4, 4), 2, None),
    "overlapping-3-stride1": ((2, 3, 5, 5), 3, 1),
    "nonsquare": ((1, 5, 6, 7), (2, 3), (2, 1)),
    "stride-gt-kernel": ((2, 1, 8, 7), 2, 3),
    "window-equals-input": ((1, 3, 3, 4), (3, 4), None),
    "remainder-rows": ((1, 3, 7, 7), 2, None),
    "1x1": ((1, 3, 3, 2), 1, None),
}


@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d])
@pytest.mark.parametrize("shape, kernel, stride", POOL2D_CASES.values(), ids=POOL2D_CASES.keys())
def test_pool2d(device, pool, shape, kernel, stride):
    check_on(device, pool(kernel, stride), distinct(shape))


POOL1D_CASES = {
    "2-default-stride": ((1, 1, 6), 2, None),
    "overlapping-3-stride1": ((2, 3, 7), 3, 1),
    "stride-gt-kernel": ((1, 5, 10), 2, 3),
    "window-equals-input": ((2, 1, 4), 4, None),
    "remainder": ((1, 3, 7), 3, 2),
}


@pytest.mark.parametrize("pool", [nn.MaxPool1d, nn.AvgPool1d])
@pytest.mark.parametrize("shape, kernel, stride", POOL1D_CASES.values(), ids=POOL1D_CASES.keys())
def test_pool1d(device, pool, shape, kernel, stride):
    check_on(device, pool(kernel, stride), distinct(shape))


@pytest.mark.parametrize("shape", [(1, 1, 3, 3), (2, 3, 4, 5), (3, 7)])
def test_relu(device, shape):
    check_on(device, nn.ReLU(), away_from_zero(shape))


@pytest.mark.parametrize("start_dim, end_dim", [(1, -1), (2, 3), (0, 1)])
def test_flatten(device, start_dim, end_dim):
    check_on(device, nn.Flatten(start_dim, end_dim), np.random.default_rng(1).standard_normal((2, 3, 2, 4)))


@pytest.mark.parametrize("shape, bias", [((1, 5), True), ((4, 3), False), ((2, 3, 5), True)])
def test_linear(device, shape, bias):
    m = nn.Linear(shape[-1], 4, bias=bias).double()
    check_on(device, m, np.random.default_rng(1).standard_normal(shape))


@pytest.mark.parametrize("n, classes", [(1, 3), (4, 5), (6, 2)])
def test_cross_entropy_loss(device, n, classes):
    rng = np.random.default_rng(n)
    target = rng.integers(0, classes, size=n)
    check_on(device, nn.CrossEntropyLoss(), 3 * rng.standard_normal((n, classes)), target)


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (2, 3, 2, 2)])
def test_mse_loss(device, shape):
    rng = np.random.default_rng(2)
    check_on(device, nn.MSELoss(), rng.standard_normal(shape), rng.standard_normal(shape))


def test_sequential_cnn(device):
    """Two conv blocks, both pool kinds, a 1x1 conv and a linear head: the chain rule end to end."""
    m = nn.Sequential(
        nn.Conv2d(2, 3, (3, 2), padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AvgPool2d((1, 2), stride=(1, 1)),
        nn.Flatten(), nn.Linear(4 * 3 * 1, 3),
    ).double()
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 4))
    check_on(device, m, x, rtol=1e-5, atol=1e-7)


def test_sequential_1d(device):
    m = nn.Sequential(nn.Conv1d(1, 2, 3, stride=2), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(2 * 4, 2)).double()
    check_on(device, m, np.random.default_rng(4).standard_normal((3, 1, 17)), rtol=1e-5, atol=1e-7)


def test_parameter_gradients_accumulate_until_zero_grad(device):
    """As in torch: two backward passes add up; zero_grad clears."""
    m = nn.Conv2d(2, 3, 2).double().to(device)
    x = to_device(np.random.default_rng(0).standard_normal((2, 2, 4, 4)), device)
    dy = to_device(np.ones((2, 3, 3, 3)), device)
    m(x)
    m.backward(dy)
    once = as_numpy(m.weight.grad).copy(), as_numpy(m.bias.grad).copy()
    m(x)
    m.backward(dy)
    np.testing.assert_allclose(as_numpy(m.weight.grad), 2 * once[0])
    np.testing.assert_allclose(as_numpy(m.bias.grad), 2 * once[1])
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None


class _LinearWithWrongBiasGrad(nn.Linear):
    def backward(self, dy):
        dx = super().backward(dy)
        self.bias.grad = self.bias.grad * 1.01
        return dx


def test_check_backward_catches_a_wrong_parameter_gradient():
    m = _LinearWithWrongBiasGrad(3, 2).double()
    with pytest.raises(AssertionError, match="parameter bias"):
        check_backward(m, np.random.default_rng(0).standard_normal((2, 3)))
