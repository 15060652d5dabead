"""SGD's dampening and Nesterov momentum, AdamW's decoupled weight decay, AMSGrad: against
the update rules written out in float64, against PyTorch where installed, on every device;
bad arguments are clear errors."""
import math

import numpy as np
import pytest

from gpucnn import nn, optim
from gpucnn.cuda import as_numpy, device_of, to_device

STEPS = 5


def gradients(shape, seed=2):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(STEPS)]


def ours_after(make, p0, grads, device, dtype=np.float64):
    p = nn.Parameter(to_device(p0.astype(dtype), device))
    opt = make([p])
    for g in grads:
        p.grad = to_device(g.astype(dtype), device)
        opt.step()
    assert device_of(p.data) == device and p.data.dtype == dtype
    return as_numpy(p.data)


def sgd_reference(p, grads, lr, momentum, dampening, weight_decay, nesterov):
    """torch.optim.SGD's documented algorithm, one line per formula."""
    p, buf = p.copy(), None
    for g in grads:
        d = g + weight_decay * p
        buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def adamw_reference(p, grads, lr, betas, eps, weight_decay, amsgrad):
    """torch.optim.AdamW's documented algorithm."""
    p, m, v, vmax = p.copy(), 0 * p, 0 * p, 0 * p
    for t, g in enumerate(grads, 1):
        p = p * (1 - lr * weight_decay)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        vmax = np.maximum(vmax, v)
        v_hat = (vmax if amsgrad else v) / (1 - betas[1] ** t)
        p = p - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v_hat) + eps)
    return p


SGD_CASES = {
    "nesterov": dict(lr=0.1, momentum=0.9, dampening=0, weight_decay=0.01, nesterov=True),
    "dampening": dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0, nesterov=False),
    "nesterov-no-decay": dict(lr=0.2, momentum=0.5, dampening=0, weight_decay=0, nesterov=True),
}
ADAMW_CASES = {
    "defaults": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False),
    "amsgrad": dict(lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True),
}


@pytest.mark.parametrize("case", SGD_CASES.values(), ids=SGD_CASES.keys())
def test_sgd_follows_the_written_out_rule(device, case):
    p0, grads = np.random.default_rng(1).standard_normal((3, 4)), gradients((3, 4))
    got = ours_after(lambda ps: optim.SGD(ps, **case), p0, grads, device)
    np.testing.assert_allclose(got, sgd_reference(p0, grads, **case), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("case", ADAMW_CASES.values(), ids=ADAMW_CASES.keys())
def test_adamw_follows_the_written_out_rule(device, case):
    p0, grads = np.random.default_rng(1).standard_normal((3, 4)), gradients((3, 4))
    got = ours_after(lambda ps: optim.AdamW(ps, **case), p0, grads, device)
    np.testing.assert_allclose(got, adamw_reference(p0, grads, **case), rtol=1e-12, atol=1e-14)


def test_amsgrad_keeps_the_largest_second_moment():
    """Large gradients then small ones: v falls, v_max does not, so AMSGrad's steps are smaller."""
    grads = [np.full(2, 10.0)] * 2 + [np.full(2, 0.01)] * 3
    p0 = np.zeros(2)
    plain = ours_after(lambda ps: optim.Adam(ps, lr=0.1), p0, grads, "cpu")
    ams = ours_after(lambda ps: optim.Adam(ps, lr=0.1, amsgrad=True), p0, grads, "cpu")
    assert (abs(ams) < abs(plain)).all()


TORCH_CASES = {
    "sgd-nesterov": ("SGD", SGD_CASES["nesterov"]),
    "sgd-dampening": ("SGD", SGD_CASES["dampening"]),
    "adamw": ("AdamW", {}),
    "adamw-amsgrad": ("AdamW", ADAMW_CASES["amsgrad"]),
    "adam-amsgrad": ("Adam", dict(lr=0.02, weight_decay=0.05, amsgrad=True)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs", TORCH_CASES.values(), ids=TORCH_CASES.keys())
def test_updates_match_torch(device, name, kwargs, dtype):
    torch = pytest.importorskip("torch")
    p0, grads = np.random.default_rng(1).standard_normal((4, 3)), gradients((4, 3))
    got = ours_after(lambda ps: getattr(optim, name)(ps, **kwargs), p0, grads, device, dtype)
    pt = torch.tensor(p0.astype(dtype), requires_grad=True)
    opt = getattr(torch.optim, name)([pt], **kwargs)
    for g in grads:
        pt.grad = torch.from_numpy(g.astype(dtype))
        opt.step()
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, pt.detach().numpy(), **tol)


def test_adamw_has_torch_defaults():
    opt = optim.AdamW([nn.Parameter(np.zeros(2))])
    assert opt.hyper == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False}
    assert opt.param_groups == [opt.hyper]


def test_state_saved_before_the_new_options_still_loads():
    """A checkpoint written before dampening, Nesterov and amsgrad existed lacks those keys: it
    loads, and the optimizer keeps its own values for them."""
    p = nn.Parameter(np.ones(2))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.load_state_dict({"hyper": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0}, "state": {}})
    assert opt.hyper == {"lr": 0.05, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False}
    p.grad = np.ones(2)
    opt.step()
    np.testing.assert_allclose(p.data, 1 - 0.05)
    assert math.isclose(float(opt.state[0]["momentum_buffer"][0]), 1.0)


@pytest.mark.parametrize("make, want", [
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True),
     "SGD: Nesterov momentum requires a momentum and zero dampening, but got momentum=0, dampening=0"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "SGD: Nesterov momentum requires a momentum and zero dampening, but got momentum=0.9, dampening=0.1"),
    (lambda p: optim.AdamW(p, lr=-0.1), "AdamW: invalid learning rate: -0.1"),
    (lambda p: optim.AdamW(p, betas=(1.0, 0.9)), "AdamW: invalid beta parameters: (1.0, 0.9)"),
    (lambda p: optim.AdamW(p, eps=-1.0), "AdamW: invalid epsilon value: -1.0"),
    (lambda p: optim.AdamW(p, weight_decay=-0.1), "AdamW: invalid weight_decay value: -0.1"),
])
def test_bad_arguments_are_clear_errors(make, want):
    with pytest.raises(ValueError) as e:
        make([nn.Parameter(np.zeros(2))])
    assert want in str(e.value)
