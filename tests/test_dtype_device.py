"""float32 by default, float64 throughout after .double(): outputs, gradients, losses'
gradients and optimizer updates all take the parameters' dtype, and stay on the
parameters' device. An optimizer built before m.to(device) or m.double() keeps working on
the moved parameters. state_dict() is plain NumPy on every device; load_state_dict keeps
each parameter's device."""
import re

import numpy as np
import pytest

import gpucnn
from gpucnn import checks, cuda, nn, optim


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
    crit(out, cuda.to_device(np.array([0, 2]), cuda.device_of(x)))
    dx = model.backward(crit.backward())
    opt.step()
    return out, dx


@pytest.mark.parametrize("make_opt", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)])
@pytest.mark.parametrize("cast, dtype", [(lambda m: m, np.float32), (lambda m: m.double(), np.float64)])
def test_every_array_takes_the_parameters_dtype_and_device(device, cast, dtype, make_opt):
    model = cast(small_cnn()).to(device)
    x = cuda.to_device(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(dtype), device)
    opt = make_opt(model.parameters())
    out, dx = one_step(model, x, opt)
    out, dx = one_step(model, x, opt)
    assert out.dtype == dtype and dx.dtype == dtype
    assert cuda.device_of(out) == cuda.device_of(dx) == device
    for name, p in model.named_parameters():
        assert p.data.dtype == p.grad.dtype == dtype, name
        assert cuda.device_of(p.data) == cuda.device_of(p.grad) == device, name
    for s in opt.state.values():
        assert all(v.dtype == dtype and cuda.device_of(v) == device for v in s.values() if hasattr(v, "dtype"))


def test_float_after_double_goes_back_and_clears_grads(device):
    model = small_cnn().double().to(device)
    one_step(model, cuda.to_device(np.zeros((2, 1, 6, 6)), device), optim.SGD(model.parameters(), lr=0.1))
    model.float()
    assert all(p.data.dtype == np.float32 and p.grad is None for p in model.parameters())
    assert all(cuda.device_of(p.data) == device for p in model.parameters())


def test_optimizer_built_before_double_casts_its_state(device):
    model = small_cnn().to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    one_step(model, cuda.to_device(np.ones((2, 1, 6, 6), np.float32), device), opt)
    model.double()
    one_step(model, cuda.to_device(np.ones((2, 1, 6, 6)), device), opt)
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    assert all(s["momentum_buffer"].dtype == np.float64 for s in opt.state.values())


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
])
def test_optimizer_built_before_to_keeps_working(cuda_device, make_opt):
    """Steps on cpu, then on "cuda", then on cpu again give exactly the all-cpu updates."""
    moved, reference = nn.Linear(4, 3), nn.Linear(4, 3)
    reference.load_state_dict(moved.state_dict())
    opt, opt_ref = make_opt(moved.parameters()), make_opt(reference.parameters())
    rng = np.random.default_rng(0)
    for device in ["cpu", cuda_device, cuda_device, "cpu"]:
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


def test_to_moves_existing_gradients_and_back(cuda_device):
    m = nn.Linear(2, 2)
    m.weight.grad = np.ones((2, 2), np.float32)
    m.to(cuda_device)
    assert cuda.device_of(m.weight.grad) == "cuda" and cuda.device_of(m.bias.data) == "cuda"
    assert m.weight.grad.dtype == np.float32
    m.to("cpu")
    assert type(m.weight.data) is np.ndarray and type(m.weight.grad) is np.ndarray


def test_state_dict_is_plain_numpy_on_every_device(device):
    model = small_cnn().double().to(device)
    opt = optim.Adam(model.parameters())
    one_step(model, cuda.to_device(np.ones((2, 1, 6, 6)), device), opt)
    for k, v in model.state_dict().items():
        assert type(v) is np.ndarray and v.dtype == np.float64, k
    for s in opt.state_dict()["state"].values():
        assert all(type(v) is np.ndarray for v in s.values() if hasattr(v, "shape"))


def test_load_state_dict_keeps_each_parameter_on_its_device(cuda_device):
    """Weights and optimizer state saved on either device load onto either device, as exact copies."""
    for source_device, target_device in (("cpu", cuda_device), (cuda_device, "cpu")):
        source, target = small_cnn().to(source_device), small_cnn().to(target_device)
        opt = optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
        one_step(source, cuda.to_device(np.ones((2, 1, 6, 6), np.float32), source_device), opt)
        saved, saved_opt = source.state_dict(), opt.state_dict()
        target.load_state_dict(saved)
        resumed = optim.SGD(target.parameters(), lr=0.1, momentum=0.9)
        resumed.load_state_dict(saved_opt)
        for i, (name, p) in enumerate(target.named_parameters()):
            assert cuda.device_of(p.data) == cuda.device_of(resumed.state[i]["momentum_buffer"]) == target_device
            np.testing.assert_array_equal(cuda.as_numpy(p.data), saved[name], err_msg=name)
            np.testing.assert_array_equal(cuda.as_numpy(resumed.state[i]["momentum_buffer"]),
                                          saved_opt["state"][i]["momentum_buffer"], err_msg=name)
        assert not np.array_equal(saved["0.weight"], small_cnn().state_dict()["0.weight"])  # the step changed it


def test_moving_to_and_from_cuda_copies_like_host_and_device_memory(cuda_device):
    """On a GPU, a device array never shares memory with a host array; nor may the emulator's."""
    host = np.zeros(3)
    on_device = cuda.to_device(host, cuda_device)
    on_device += 1
    back = cuda.to_device(on_device, "cpu")
    on_device += 1
    np.testing.assert_array_equal(host, [0, 0, 0])
    np.testing.assert_array_equal(back, [1, 1, 1])


@pytest.mark.parametrize("make, shape, saved", [
    (lambda: nn.Conv2d(1, 1, 1), (1, 1, 2, 2), "input"), (lambda: nn.Conv1d(1, 1, 1), (1, 1, 2), "input"),
    (lambda: nn.MaxPool2d(2), (1, 1, 2, 2), "argmax"), (lambda: nn.ReLU(), (3,), "output"),
    (lambda: nn.Linear(2, 2), (1, 2), "input"),
], ids=["Conv2d", "Conv1d", "MaxPool2d", "ReLU", "Linear"])
def test_backward_refuses_dy_from_another_device(cuda_device, make, shape, saved):
    """Never a silent copy, nor a kernel handed host memory: backward names both devices."""
    for device, other in ((cuda_device, "cpu"), ("cpu", cuda_device)):
        m = make().to(device)
        y = m(cuda.to_device(np.ones(shape, np.float32), device))
        with pytest.raises(ValueError, match=f"{type(m).__name__}.backward: expected all arrays on one device, "
                                             f"but got dy on {other}, {saved} on {cuda.device_of(y)}"):
            m.backward(cuda.to_device(np.ones(y.shape, np.float32), other))


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(1, 2, 3), (2, 1, 4, 4)), (lambda: nn.Conv1d(1, 2, 3), (2, 1, 4)),
    (lambda: nn.MaxPool2d(2), (2, 1, 4, 4)), (lambda: nn.AvgPool1d(2), (2, 1, 4)),
    (lambda: nn.ReLU(), (2, 3)), (lambda: nn.Linear(3, 2), (2, 3)),
], ids=["Conv2d", "Conv1d", "MaxPool2d", "AvgPool1d", "ReLU", "Linear"])
def test_backward_refuses_dy_unlike_the_output(device, make, shape):
    """dy must have the output's shape and dtype on every device: NumPy would broadcast a
    (1, ...) dy or promote a float64 one where a kernel refuses it."""
    m = make().to(device)
    y = m(cuda.to_device(np.ones(shape, np.float32), device))
    name = type(m).__name__
    for bad in (np.ones((1,) + y.shape[1:], np.float32), np.ones(y.shape, np.float64)):
        with pytest.raises(ValueError, match=re.escape(
                f"{name}.backward: expected dy of the output's shape {checks.shape_str(y.shape)} and dtype float32, "
                f"but got dy of shape {checks.shape_str(bad.shape)} and dtype {bad.dtype}")):
            m.backward(cuda.to_device(bad, device))
