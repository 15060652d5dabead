"""PyTorch as the oracle: same weights and inputs give the same outputs, gradients and
optimizer updates (float64 to 1e-12, float32 to float32 rounding), weights move through
state_dict both ways, and initialization draws from torch's Kaiming-uniform bounds.
What computes runs on every device of the `device` fixture; results must stay there."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpucnn  # noqa: E402
from gpucnn import nn, optim  # noqa: E402
from gpucnn.cuda import as_numpy, device_of, to_device  # noqa: E402

TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


@pytest.fixture(autouse=True)
def _seeded():
    gpucnn.manual_seed(0)
    torch.manual_seed(0)


def tie_free(shape, rng):
    """A shuffled linspace: no two values equal, so max pooling's argmax is unambiguous."""
    return rng.permutation(np.linspace(-2, 2, int(np.prod(shape)))).reshape(shape)


def to_torch_state(state_dict):
    return {k: torch.from_numpy(v) for k, v in state_dict.items()}


def from_torch_state(state_dict):
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def assert_close(ours, theirs, dtype, what, device):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    assert device_of(ours) == device, f"{what}: on {device_of(ours)}, expected {device}"
    np.testing.assert_allclose(as_numpy(ours), theirs, err_msg=what, **TOLERANCES[dtype])


def compare_forward_backward(ours, theirs, x, dtype, device, seed=0):
    """Load our weights into torch's module, run both forward and backward, compare all."""
    ours = ours.double() if dtype == np.float64 else ours.float()
    theirs = theirs.to(TORCH_DTYPES[dtype])
    theirs.load_state_dict(to_torch_state(ours.state_dict()))
    ours.to(device)
    x = x.astype(dtype)
    xt = torch.tensor(x, requires_grad=True)

    y, yt = ours(to_device(x, device)), theirs(xt)
    assert_close(y, yt, dtype, "output", device)
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
    dx = ours.backward(to_device(dy, device))
    yt.backward(torch.from_numpy(dy))
    assert_close(dx, xt.grad, dtype, "input gradient", device)
    their_params = dict(theirs.named_parameters())
    assert [name for name, _ in ours.named_parameters()] == list(their_params)
    for name, p in ours.named_parameters():
        assert_close(p.grad, their_params[name].grad, dtype, f"gradient of {name}", device)


LAYERS = {
    "conv2d": (lambda: nn.Conv2d(3, 4, 3), lambda: torch.nn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    "conv2d-nonsquare": (
        lambda: nn.Conv2d(2, 3, (3, 2), stride=(2, 3), padding=(1, 2)),
        lambda: torch.nn.Conv2d(2, 3, (3, 2), stride=(2, 3), padding=(1, 2)), (2, 2, 8, 7)),
    "conv2d-no-bias": (lambda: nn.Conv2d(5, 2, 1, bias=False), lambda: torch.nn.Conv2d(5, 2, 1, bias=False), (1, 5, 3, 4)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 5, stride=2, padding=2), lambda: torch.nn.Conv1d(3, 4, 5, stride=2, padding=2), (2, 3, 11)),
    "maxpool2d": (lambda: nn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2), (2, 3, 7, 6)),
    "maxpool2d-overlap": (lambda: nn.MaxPool2d((3, 2), stride=1), lambda: torch.nn.MaxPool2d((3, 2), stride=1), (1, 2, 5, 6)),
    "maxpool1d": (lambda: nn.MaxPool1d(3, stride=2), lambda: torch.nn.MaxPool1d(3, stride=2), (2, 3, 10)),
    "avgpool2d": (lambda: nn.AvgPool2d((2, 3), stride=(3, 1)), lambda: torch.nn.AvgPool2d((2, 3), stride=(3, 1)), (2, 3, 8, 6)),
    "avgpool1d": (lambda: nn.AvgPool1d(2), lambda: torch.nn.AvgPool1d(2), (2, 3, 9)),
    "relu": (lambda: nn.ReLU(), lambda: torch.nn.ReLU(), (3, 2, 4)),
    "flatten": (lambda: nn.Flatten(), lambda: torch.nn.Flatten(), (2, 3, 2, 2)),
    "linear": (lambda: nn.Linear(6, 4), lambda: torch.nn.Linear(6, 4), (5, 6)),
    "linear-3d-input": (lambda: nn.Linear(6, 4, bias=False), lambda: torch.nn.Linear(6, 4, bias=False), (2, 5, 6)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make_ours, make_theirs, shape", LAYERS.values(), ids=LAYERS.keys())
def test_layer_matches_torch(device, make_ours, make_theirs, shape, dtype):
    x = tie_free(shape, np.random.default_rng(1))
    compare_forward_backward(make_ours(), make_theirs(), x, dtype, device)


def lenet(lib):
    """A LeNet-5-like net built from either library's layers (the names are the same)."""
    return lib.Sequential(
        lib.Conv2d(1, 6, 5, padding=2), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(6, 16, 5), lib.ReLU(), lib.AvgPool2d(2),
        lib.Flatten(), lib.Linear(16 * 5 * 5, 120), lib.ReLU(), lib.Linear(120, 10),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lenet_matches_torch(device, dtype):
    x = np.random.default_rng(2).standard_normal((2, 1, 28, 28))
    compare_forward_backward(lenet(nn), lenet(torch.nn), x, dtype, device)


def test_lenet_state_dict_keys_order_and_shapes_equal_torch():
    ours, theirs = lenet(nn).state_dict(), lenet(torch.nn).state_dict()
    assert list(ours) == list(theirs)
    assert [v.shape for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]
    assert all(v.dtype == np.float32 for v in ours.values())


def test_repr_equals_torch_for_conv_linear_relu_flatten_sequential():
    def net(lib):
        return lib.Sequential(lib.Conv2d(3, 4, (3, 2), stride=2, padding=1), lib.Conv1d(3, 4, 3, bias=False),
                              lib.ReLU(), lib.Flatten(), lib.Linear(3, 4))
    assert repr(net(nn)) == repr(net(torch.nn))


def test_load_state_dict_takes_torch_tensors_and_keeps_our_dtype_and_device(device):
    theirs, ours = lenet(torch.nn), lenet(nn).double().to(device)
    ours.load_state_dict(theirs.state_dict())
    assert all(device_of(p.data) == device for p in ours.parameters())
    for k, v in ours.state_dict().items():
        assert v.dtype == np.float64
        np.testing.assert_array_equal(v, theirs.state_dict()[k].numpy())


def test_state_dict_is_a_copy():
    ours = lenet(nn)
    sd = ours.state_dict()
    sd["0.weight"][...] = 0
    assert np.abs(ours[0].weight.data).max() > 0


def test_weights_move_from_torch_to_ours(device):
    theirs, ours = lenet(torch.nn).double(), lenet(nn).double().to(device)
    ours.load_state_dict(from_torch_state(theirs.state_dict()))
    x = np.random.default_rng(3).standard_normal((3, 1, 28, 28))
    assert_close(ours(to_device(x, device)), theirs(torch.from_numpy(x)), np.float64, "LeNet output", device)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1), (2, 1)])
def test_max_pool_ties_go_to_the_first_maximum_as_in_torch(device, kernel, stride):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 1] = 1.0
    pool = nn.MaxPool2d(kernel, stride)
    y = pool(to_device(x, device))
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, kernel, stride).backward(torch.ones(y.shape, dtype=torch.float64))
    np.testing.assert_array_equal(as_numpy(pool.backward(to_device(np.ones(y.shape), device))), xt.grad.numpy())


def test_relu_gradient_at_zero_is_zero_as_in_torch(device):
    x = np.array([[-1.0, 0.0, 2.0]])
    relu = nn.ReLU()
    relu(to_device(x, device))
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).sum().backward()
    np.testing.assert_array_equal(as_numpy(relu.backward(to_device(np.ones_like(x), device))), xt.grad.numpy())


def test_cross_entropy_is_stable_for_huge_logits(device):
    logits = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    crit = nn.CrossEntropyLoss()
    loss = crit(to_device(logits, device), to_device(np.array([1]), device))
    want = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor([1])).item()
    assert loss == want == 2000.0
    np.testing.assert_array_equal(as_numpy(crit.backward()), [[1.0, -1.0, 0.0]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dy", [1.0, 0.3])
def test_cross_entropy_loss_matches_torch(device, dtype, dy):
    rng = np.random.default_rng(4)
    logits, target = (4 * rng.standard_normal((6, 5))).astype(dtype), rng.integers(0, 5, size=6)
    crit = nn.CrossEntropyLoss()
    loss = crit(to_device(logits, device), to_device(target, device))
    lt = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(lt, torch.from_numpy(target))
    (loss_t * dy).backward()
    assert loss.shape == () and loss.dtype == dtype and device_of(loss) == device
    np.testing.assert_allclose(float(loss), loss_t.item(), **TOLERANCES[dtype])
    assert_close(crit.backward(dy), lt.grad, dtype, "d loss / d logits", device)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_loss_matches_torch(device, dtype):
    rng = np.random.default_rng(5)
    x, target = rng.standard_normal((2, 3, 4)).astype(dtype), rng.standard_normal((2, 3, 4)).astype(dtype)
    crit = nn.MSELoss()
    loss = crit(to_device(x, device), to_device(target, device))
    xt = torch.tensor(x, requires_grad=True)
    loss_t = torch.nn.functional.mse_loss(xt, torch.from_numpy(target))
    loss_t.backward()
    # A 0-d array on the input's device, of its dtype, as torch's 0-d tensor.
    assert loss.shape == () and loss.dtype == dtype and device_of(loss) == device
    assert type(loss) is type(to_device(x, device)) and isinstance(loss.item(), float)
    np.testing.assert_allclose(float(loss), loss_t.item(), **TOLERANCES[dtype])
    assert_close(crit.backward(), xt.grad, dtype, "d loss / d input", device)


def test_mse_gradient_keeps_the_input_dtype_with_a_float64_target(device):
    x, target = np.ones((2, 2), np.float32), np.zeros((2, 2))
    crit = nn.MSELoss()
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.mse_loss(xt, torch.from_numpy(target)).backward()
    crit(to_device(x, device), to_device(target, device))
    assert_close(crit.backward(), xt.grad, np.float32, "d loss / d input", device)


OPTIMIZERS = {
    "sgd": (lambda ps: optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd-momentum-wd": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
                        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01)),
    "adam": (lambda ps: optim.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam-wd": (lambda ps: optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make_ours, make_theirs", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_optimizer_updates_match_torch(device, make_ours, make_theirs, dtype):
    """Several steps with the same gradients, some of them skipped for one parameter
    (grad None), as when a layer is unused in a step."""
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.Flatten(), nn.Linear(12, 2))
    model = model.double() if dtype == np.float64 else model.float()
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in model.parameters()]
    model.to(device)
    opt, opt_t = make_ours(model.parameters()), make_theirs(theirs)
    rng = np.random.default_rng(6)
    for step in range(6):
        opt.zero_grad()
        opt_t.zero_grad()
        for i, (p, pt) in enumerate(zip(model.parameters(), theirs)):
            if step == 2 and i == 0:
                continue
            grad = rng.standard_normal(p.data.shape).astype(dtype)
            p.grad, pt.grad = to_device(grad, device), torch.from_numpy(grad)
        opt.step()
        opt_t.step()
        for i, (p, pt) in enumerate(zip(model.parameters(), theirs)):
            assert_close(p.data, pt, dtype, f"parameter {i} after step {step}", device)
    assert all(device_of(v) == device for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))


def test_training_steps_match_torch_end_to_end(device):
    """Forward, backward and SGD-with-momentum together, five steps, float64."""
    ours, theirs = lenet(nn).double(), lenet(torch.nn).double()
    theirs.load_state_dict(to_torch_state(ours.state_dict()))
    ours.to(device)
    opt = optim.SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, size=4)
    crit = nn.CrossEntropyLoss()
    for _ in range(5):
        opt.zero_grad()
        loss = crit(ours(to_device(x, device)), to_device(y, device))
        ours.backward(crit.backward())
        opt.step()
        opt_t.zero_grad()
        loss_t = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        loss_t.backward()
        opt_t.step()
        np.testing.assert_allclose(as_numpy(loss), loss_t.item(), rtol=1e-10)
    assert all(device_of(p.data) == device for p in ours.parameters())
    for k, v in from_torch_state(theirs.state_dict()).items():
        np.testing.assert_allclose(ours.state_dict()[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


INIT_LAYERS = {
    "conv2d": (lambda lib: lib.Conv2d(3, 512, 5), 3 * 25),
    "conv1d": (lambda lib: lib.Conv1d(2, 1024, 7), 2 * 7),
    "linear": (lambda lib: lib.Linear(300, 1000), 300),
}


@pytest.mark.parametrize("make, fan_in", INIT_LAYERS.values(), ids=INIT_LAYERS.keys())
def test_initialization_matches_torch_kaiming_uniform_bounds(make, fan_in):
    """torch: weight ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias the same.
    With >= 512 draws, the largest |value| lies within 2% of the bound almost surely."""
    bound = 1 / math.sqrt(fan_in)
    ours, theirs = make(nn), make(torch.nn)
    for name in ("weight", "bias"):
        w = getattr(ours, name).data
        wt = getattr(theirs, name).detach().numpy()
        assert w.dtype == np.float32 and w.shape == wt.shape
        for values in (w, wt):  # torch itself confirms the bound we expect
            assert np.abs(values).max() <= bound * (1 + 1e-6)
            assert np.abs(values).max() >= 0.98 * bound
        np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.1)  # uniform, not normal
        assert abs(w.mean()) < 0.1 * bound


def test_manual_seed_makes_initialization_reproducible():
    gpucnn.manual_seed(123)
    a = lenet(nn).state_dict()
    gpucnn.manual_seed(123)
    b = lenet(nn).state_dict()
    c = lenet(nn).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(b["0.weight"], c["0.weight"])
