"""A network's first layer skips its input gradient when the input is data (PyTorch skips it
for an input that does not require grad): the same parameter gradients, no dx computed."""
import numpy as np
import pytest

import gpucnn
from gpucnn import nn
from gpucnn.backends import cpu
from gpucnn.cuda import as_numpy, to_device


def lenet_like(device):
    gpucnn.manual_seed(0)  # the same weights each time
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3)).to(device)
    return model, to_device(rng.standard_normal((5, 1, 8, 8)).astype(np.float32), device)


@pytest.mark.parametrize("first", ["conv", "linear"])
def test_parameter_gradients_are_the_same_without_the_input_gradient(device, first):
    grads = []
    for input_grad in (True, False):
        model, x = lenet_like(device)
        if first == "linear":
            model, x = nn.Sequential(nn.Linear(64, 3), nn.ReLU(), nn.Linear(3, 2)).to(device), x.reshape(5, 64)
        y = model(x)
        dx = model.backward(to_device(np.ones(y.shape, np.float32), device), input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        grads.append([as_numpy(p.grad) for p in model.parameters()])
    for with_dx, without in zip(*grads):
        np.testing.assert_array_equal(with_dx, without)


def test_the_first_convolution_computes_no_input_gradient(monkeypatch):
    model, x = lenet_like("cpu")
    calls = []
    real = cpu.conv2d_backward_data
    monkeypatch.setattr(cpu, "conv2d_backward_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    y = model(x)
    model.backward(np.ones(y.shape, np.float32), input_grad=False)
    assert calls == []
    model.backward(np.ones(y.shape, np.float32))
    assert calls == [1]
