"""An optimizer saved with state_dict and restored into a fresh one continues exactly as
if it had never stopped (momentum buffers, Adam's moments and step count included)."""
import numpy as np
import pytest

import gpucnn
from gpucnn import nn, optim

OPTIMIZERS = {
    "sgd-momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    "sgd-dampening": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd-nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "adamw-amsgrad": lambda ps: optim.AdamW(ps, lr=0.01, amsgrad=True),
}


def model_and_grads(seed=0):
    gpucnn.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(2, 3, 2), nn.Flatten(), nn.Linear(6, 2))
    rng = np.random.default_rng(seed)
    grads = [[rng.standard_normal(p.data.shape).astype(np.float32) for p in model.parameters()] for _ in range(6)]
    return model, grads


def run(opt, model, grads):
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads):
            p.grad = g.copy()
        opt.step()


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_resumed_optimizer_continues_exactly(make):
    straight, grads = model_and_grads()
    run(make(straight.parameters()), straight, grads)

    first, _ = model_and_grads()
    opt = make(first.parameters())
    run(opt, first, grads[:3])
    saved_model, saved_opt = first.state_dict(), opt.state_dict()
    run(opt, first, grads[3:4])  # steps after the save must not leak into the saved state

    resumed, _ = model_and_grads(seed=1)
    resumed.load_state_dict(saved_model)
    opt2 = make(resumed.parameters())
    opt2.load_state_dict(saved_opt)
    run(opt2, resumed, grads[3:])
    for k, v in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v, err_msg=k)


def test_state_dict_holds_plain_numpy_and_the_hyperparameters():
    model, grads = model_and_grads()
    opt = optim.Adam(model.parameters(), lr=0.02, betas=(0.8, 0.9))
    run(opt, model, grads[:2])
    sd = opt.state_dict()
    assert sd["hyper"] == {"lr": 0.02, "betas": (0.8, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False}
    assert sorted(sd["state"]) == list(range(len(model.parameters())))
    assert sd["state"][0]["step"] == 2
    assert type(sd["state"][0]["exp_avg"]) is np.ndarray


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_loading_copies_the_state(make):
    """Two optimizers resumed from one saved state must not share (and update) its buffers."""
    model, grads = model_and_grads()
    opt = make(model.parameters())
    run(opt, model, grads[:2])
    saved, saved_model = opt.state_dict(), model.state_dict()
    ends = []
    for _ in range(2):
        resumed, _ = model_and_grads()
        resumed.load_state_dict(saved_model)
        again = make(resumed.parameters())
        again.load_state_dict(saved)
        run(again, resumed, grads[2:])
        ends.append(resumed.state_dict())
    for k in ends[0]:
        np.testing.assert_array_equal(ends[1][k], ends[0][k], err_msg=k)


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_loading_a_state_that_does_not_fit_is_a_clear_error(make):
    """A state for another model (more parameters, other shapes) is refused before anything changes."""
    model, grads = model_and_grads()
    opt = make(model.parameters())
    run(opt, model, grads[:1])
    saved = opt.state_dict()
    name = type(opt).__name__
    n = len(model.parameters())
    with pytest.raises(ValueError, match=rf"{name}.load_state_dict: state for parameter {n}, but the optimizer has {n}"):
        opt.load_state_dict({"hyper": saved["hyper"], "state": {**saved["state"], n: saved["state"][0]}})
    key = next(k for k, v in saved["state"][0].items() if hasattr(v, "shape"))
    shape = model.parameters()[0].data.shape
    wrong = {**saved["state"], 0: {**saved["state"][0], key: np.zeros((1,) + shape, np.float32)}}
    with pytest.raises(ValueError, match=rf"{name}.load_state_dict: {key} of parameter 0 has shape \[1, "):
        opt.load_state_dict({"hyper": saved["hyper"], "state": wrong})
    for k, v in opt.state_dict()["state"][0].items():
        np.testing.assert_array_equal(v, saved["state"][0][k])
