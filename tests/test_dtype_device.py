"""float32 by default, float64 throughout after .double(): outputs, gradients, losses'
gradients and optimizer updates all take the parameters' dtype. An optimizer built before
m.to(device) or m.double() keeps working on the moved parameters."""
import numpy as np
import pytest

import gpucnn
from gpucnn import cuda, nn, optim


def small_cnn():
    gpucnn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d((1, 2), stride=1),
        nn.Flatten(), nn.Linear(2 * 3 * 2, 3),
    )


def one_step(model, x, opt):
    crit = nn.CrossEntropyLoss()
    opt.zero_grad()
    out = model(x)
    crit(out, np.array([0, 2]))
    dx = model.backward(crit.backward())
    opt.step()
    return out, dx


@pytest.mark.parametrize("make_opt", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)])
@pytest.mark.parametrize("cast, dtype", [(lambda m: m, np.float32), (lambda m: m.double(), np.float64)])
def test_every_array_takes_the_parameters_dtype(cast, dtype, make_opt):
    model = cast(small_cnn())
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(dtype)
    opt = make_opt(model.parameters())
    out, dx = one_step(model, x, opt)
    out, dx = one_step(model, x, opt)
    assert out.dtype == dtype and dx.dtype == dtype
    for name, p in model.named_parameters():
        assert p.data.dtype == dtype, name
        assert p.grad.dtype == dtype, name
    for s in opt.state.values():
        assert all(v.dtype == dtype for v in s.values() if hasattr(v, "dtype"))


def test_float_after_double_goes_back_and_clears_grads():
    model = small_cnn().double()
    one_step(model, np.zeros((2, 1, 6, 6)), optim.SGD(model.parameters(), lr=0.1))
    model.float()
    assert all(p.data.dtype == np.float32 and p.grad is None for p in model.parameters())


def test_optimizer_built_before_double_casts_its_state():
    model = small_cnn()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    one_step(model, np.ones((2, 1, 6, 6), np.float32), opt)
    model.double()
    one_step(model, np.ones((2, 1, 6, 6)), opt)
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    assert all(s["momentum_buffer"].dtype == np.float64 for s in opt.state.values())


@pytest.fixture
def emulated_cuda(monkeypatch):
    """Device "cuda" as the emulator's arrays. Only the optimizer's array math runs on
    them here (gradients are set by hand), so no kernel is compiled."""
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
])
def test_optimizer_built_before_to_keeps_working(emulated_cuda, make_opt):
    """Steps on cpu, then on "cuda", then on cpu again give exactly the all-cpu updates."""
    moved, reference = nn.Linear(4, 3), nn.Linear(4, 3)
    reference.load_state_dict(moved.state_dict())
    opt, opt_ref = make_opt(moved.parameters()), make_opt(reference.parameters())
    rng = np.random.default_rng(0)
    for device in ["cpu", "cuda", "cuda", "cpu"]:
        moved.to(device)
        for p, p_ref in zip(moved.parameters(), reference.parameters()):
            p_ref.grad = rng.standard_normal(p.data.shape).astype(np.float32)
            p.grad = cuda.to_device(p_ref.grad.copy(), device)
        opt.step()
        opt_ref.step()
        for p in moved.parameters():
            assert cuda.device_of(p.data) == device
        for s in opt.state.values():
            assert all(cuda.device_of(v) == device for v in s.values() if hasattr(v, "shape"))
        for k, v in reference.state_dict().items():
            np.testing.assert_array_equal(moved.state_dict()[k], v, err_msg=f"{k} after a step on {device}")


def test_to_moves_existing_gradients_and_back(emulated_cuda):
    m = nn.Linear(2, 2)
    m.weight.grad = np.ones((2, 2), np.float32)
    m.to("cuda")
    assert cuda.device_of(m.weight.grad) == "cuda" and cuda.device_of(m.bias.data) == "cuda"
    assert m.weight.grad.dtype == np.float32
    m.to("cpu")
    assert type(m.weight.data) is np.ndarray and type(m.weight.grad) is np.ndarray
