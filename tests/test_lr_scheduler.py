"""Schedulers: the same learning rate as torch.optim.lr_scheduler at every step (bit for
bit: both compute recursively in Python floats), closed forms without torch, and a
scheduler resumed from a JSON round trip of its state continuing exactly."""
import json
import math

import numpy as np
import pytest

from gpucnn import nn, optim
from gpucnn.optim import lr_scheduler

STEPS = 25


def sgd(lr=0.1):
    return optim.SGD([nn.Parameter(np.zeros(2))], lr=lr, momentum=0.9)


# Each case builds the same schedule from either library's module and optimizer.
CASES = {
    "step": lambda m, opt: m.StepLR(opt, step_size=4, gamma=0.5),
    "cosine": lambda m, opt: m.CosineAnnealingLR(opt, T_max=10, eta_min=0.001),  # runs past T_max
    "linear": lambda m, opt: m.LinearLR(opt, start_factor=0.1, total_iters=6),
    "linear-decay": lambda m, opt: m.LinearLR(opt, start_factor=1.0, end_factor=0.2, total_iters=7),
    "warmup-cosine": lambda m, opt: m.SequentialLR(
        opt, [m.LinearLR(opt, start_factor=0.25, total_iters=3), m.CosineAnnealingLR(opt, T_max=STEPS - 3)], [3]),
    "three-phases": lambda m, opt: m.SequentialLR(
        opt, [m.LinearLR(opt, 0.5, total_iters=2), m.StepLR(opt, 3, 0.7), m.CosineAnnealingLR(opt, 5)], [4, 12]),
    "one-cycle": lambda m, opt: m.OneCycleLR(opt, max_lr=0.5, total_steps=STEPS),
    "one-cycle-linear-3-phases": lambda m, opt: m.OneCycleLR(
        opt, max_lr=0.4, epochs=5, steps_per_epoch=6, pct_start=0.25, anneal_strategy="linear", three_phase=True),
}


def lrs(scheduler, optimizer, steps):
    """[lr of step 0, lr of step 1, ...]: each as get_last_lr() and as the optimizer holds it."""
    out = []
    for _ in range(steps):
        assert scheduler.get_last_lr() == [optimizer.param_groups[0]["lr"]]
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_same_learning_rates_as_torch_at_every_step(make):
    torch = pytest.importorskip("torch")
    opt_t = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
    want = lrs(make(torch.optim.lr_scheduler, opt_t), opt_t, STEPS)
    opt = sgd()
    assert lrs(make(lr_scheduler, opt), opt, STEPS) == want


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_one_cycle_moves_momentum_and_beta1_as_torch_does(name):
    torch = pytest.importorskip("torch")

    def momenta(optimizer, groups, steps=STEPS):
        scheduler = (lr_scheduler if groups is None else torch.optim.lr_scheduler).OneCycleLR(
            optimizer, max_lr=0.3, total_steps=steps, base_momentum=0.8, max_momentum=0.9)
        out = []
        for _ in range(steps):
            group = optimizer.param_groups[0]
            out.append(group["momentum"] if name == "SGD" else group["betas"][0])
            optimizer.step()
            scheduler.step()
        return out

    kwargs = dict(lr=0.1, momentum=0.9) if name == "SGD" else {}
    opt_t = getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)
    opt = getattr(optim, name)([nn.Parameter(np.zeros(2))], **({"lr": 0.1, "momentum": 0.9} if name == "SGD" else {}))
    got = momenta(opt, None)
    assert got == momenta(opt_t, True)
    assert got[0] == 0.9 and min(got) == pytest.approx(0.8, abs=1e-3)


def test_closed_forms():
    """What the recursions approximate, written out."""
    opt = sgd(0.2)
    got = lrs(lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=0.01), opt, 9)
    want = [0.01 + (0.2 - 0.01) * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(9)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    opt = sgd(0.2)
    np.testing.assert_allclose(lrs(lr_scheduler.StepLR(opt, 2, gamma=0.1), opt, 6),
                               [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-12)
    opt = sgd(0.2)
    np.testing.assert_allclose(lrs(lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, 0.25, total_iters=3), lr_scheduler.CosineAnnealingLR(opt, 4)], [3]), opt, 7),
        [0.05, 0.1, 0.15, 0.2, 0.1 * (1 + math.cos(math.pi / 4)), 0.1, 0.1 * (1 + math.cos(3 * math.pi / 4))],
        rtol=1e-12)
    assert opt.hyper["initial_lr"] == 0.2


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("stop", [1, 3, 11])
def test_resumed_scheduler_continues_exactly(make, stop):
    opt = sgd()
    scheduler = make(lr_scheduler, opt)
    whole = lrs(scheduler, opt, STEPS)

    opt = sgd()
    scheduler = make(lr_scheduler, opt)
    lrs(scheduler, opt, stop)
    saved_opt, saved = opt.state_dict(), json.loads(json.dumps(scheduler.state_dict()))
    lrs(scheduler, opt, 2)  # steps after the save must not leak into the saved state

    resumed_opt = sgd()
    resumed = make(lr_scheduler, resumed_opt)  # built first, as torch advises: building sets the lr
    resumed_opt.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    assert lrs(resumed, resumed_opt, STEPS - stop) == whole[stop:]


@pytest.mark.parametrize("make, want", [
    (lambda opt: lr_scheduler.StepLR(opt, step_size=0), "StepLR: step_size must be a positive int, but got step_size=0"),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=2.5), "CosineAnnealingLR: T_max must be a positive int, but got T_max=2.5"),
    (lambda opt: lr_scheduler.LinearLR(opt, start_factor=0), "LinearLR: start_factor must be in (0, 1], but got start_factor=0"),
    (lambda opt: lr_scheduler.LinearLR(opt, end_factor=1.5), "LinearLR: end_factor must be in [0, 1], but got end_factor=1.5"),
    (lambda opt: lr_scheduler.StepLR("sgd", 2), "StepLR: expected a gpucnn.optim optimizer, but got str"),
    (lambda opt: lr_scheduler.StepLR(opt, 2, last_epoch=4), "StepLR: last_epoch=4 resumes a schedule, but the optimizer has no 'initial_lr'"),
    (lambda opt: lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2)], [3]),
     "SequentialLR: expects one milestone fewer than schedulers, but got 1 schedulers and 1 milestones"),
    (lambda opt: lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2), lr_scheduler.StepLR(sgd(), 2)], [3]),
     "SequentialLR: scheduler 1 (StepLR) does not belong to the optimizer given"),
    (lambda opt: lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2)] * 3, [3, 3]),
     "SequentialLR: milestones must be positive and increasing, but got [3, 3]"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 1.0), "OneCycleLR: give total_steps, or epochs and steps_per_epoch"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 1.0, total_steps=10, pct_start=1),
     "OneCycleLR: pct_start must be a float in [0, 1], but got pct_start=1"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 1.0, total_steps=10, anneal_strategy="cosine"),
     "OneCycleLR: anneal_strategy must be 'cos' or 'linear', but got anneal_strategy='cosine'"),
    (lambda opt: [s.step() for s in [lr_scheduler.OneCycleLR(opt, 1.0, total_steps=2)] * 3],
     "OneCycleLR: stepped 3 times, but total_steps is 2"),
    (lambda opt: lr_scheduler.StepLR(opt, 2).load_state_dict(lr_scheduler.CosineAnnealingLR(sgd(), 3).state_dict()),
     "StepLR.load_state_dict: state of another scheduler (missing keys: ['gamma', 'step_size'], "
     "unexpected keys: ['T_max', 'eta_min'])"),
])
def test_bad_arguments_are_clear_errors(make, want):
    with pytest.raises(ValueError) as e:
        make(sgd())
    assert want in str(e.value)
