"""Learning-rate schedulers with torch.optim.lr_scheduler's names, arguments and step()
semantics: building one sets the optimizer's lr for step 0 (and records `initial_lr`);
each step() after an epoch (or batch) moves it on; get_last_lr() lists what was set.

They compute as torch does, recursively from the optimizer's current lr where torch
does (CosineAnnealingLR, LinearLR, StepLR), in closed form where it does (OneCycleLR),
so the two agree step by step to the last bit. state_dict() is plain numbers and lists (JSON-ready, for checkpoints' metadata);
a scheduler rebuilt on a resumed optimizer and given load_state_dict(...) continues
exactly. The optimizer has one parameter group: `optimizer.param_groups == [hyper]`.
"""
import math
from bisect import bisect_right

from .optimizer import Optimizer


def _copy(state):
    """A copy of a state's entries, its lists copied too, so that saved and live state never alias."""
    return {k: list(v) if isinstance(v, list) else v for k, v in state.items()}


def _check_keys(where, expected, got):
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{where}: state of another scheduler (missing keys: {missing}, unexpected keys: {unexpected})")


class LRScheduler:
    """Base of every scheduler: subclasses give get_lr() (the recursive rule) and, where
    torch has one, _get_closed_form_lr() (used when SequentialLR hands over at a milestone)."""

    def __init__(self, optimizer, last_epoch=-1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"{name}: expected a gpucnn.optim optimizer, but got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in group for group in optimizer.param_groups):
            raise ValueError(f"{name}: last_epoch={last_epoch} resumes a schedule, but the optimizer has no "
                             f"'initial_lr': load the optimizer's state_dict first, or pass last_epoch=-1")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self):
        """Move to the next epoch (or batch) and set its learning rate; call after optimizer.step()."""
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._get_closed_form_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _group_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self):
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rates the last step() (or the constructor) set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer: numbers and lists only."""
        return _copy({k: v for k, v in self.__dict__.items() if k != "optimizer"})

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned; a state of another kind of scheduler is refused."""
        _check_keys(f"{type(self).__name__}.load_state_dict", self.state_dict(), state_dict)
        self.__dict__.update(_copy(state_dict))


def _positive_int(scheduler, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{scheduler}: {name} must be a positive int, but got {name}={value!r}")
    return value


class StepLR(LRScheduler):
    """Multiply the lr by gamma every step_size steps."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2, reached as torch does:
    each step multiplies (lr - eta_min) by the ratio of successive cosine factors."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._group_lrs()
        if self._step_count == 1 and t > 0:
            return [lo + (base - lo) * (1 + math.cos(t * math.pi / T)) / 2 for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:  # past T_max the cosine turns back up, as torch's does
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._group_lrs())]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - lo) + lo
                for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the lr by a factor going linearly from start_factor to end_factor over
    total_iters steps, then keep it: a warmup with end_factor=1."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], but got start_factor={start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], but got end_factor={end_factor}")
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = _positive_int("LinearLR", "total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._group_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._group_lrs()
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor + (self.last_epoch - 1) * change)
        return [lr * ratio for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        change = self.end_factor - self.start_factor
        return [base * (self.start_factor + change * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run schedulers one after another: schedulers[i + 1] takes over at step milestones[i],
    starting from its own step 0. Linear warmup then cosine:
    SequentialLR(opt, [LinearLR(opt, 0.1, total_iters=w), CosineAnnealingLR(opt, n - w)], [w])."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        name = type(self).__name__
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError(f"{name}: expects at least one scheduler, but got none")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler) or s.optimizer is not optimizer:
                raise ValueError(f"{name}: scheduler {i} ({type(s).__name__}) does not belong to the optimizer given")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{name}: expects one milestone fewer than schedulers, but got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(m <= 0 for m in milestones):
            raise ValueError(f"{name}: milestones must be positive and increasing, but got {milestones}")
        self.optimizer = optimizer
        self._schedulers, self._milestones = schedulers, milestones
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._undo_initial_steps(self)
        first = self._schedulers[bisect_right(milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @classmethod
    def _undo_initial_steps(cls, scheduler):
        """Each scheduler stepped once when it was built; the one in charge steps again now."""
        for s in scheduler._schedulers:
            if isinstance(s, SequentialLR):
                cls._undo_initial_steps(s)
            else:
                s.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        i = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            scheduler._update_lr(0)  # the next scheduler starts at its own step 0
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        state = _copy({k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")})
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        inner = state_dict.get("_schedulers")
        if not isinstance(inner, list) or len(inner) != len(self._schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: state of another scheduler (expected states of "
                             f"{len(self._schedulers)} schedulers)")
        _check_keys("SequentialLR.load_state_dict", self.state_dict(), state_dict)
        for s, state in zip(self._schedulers, inner):
            s.load_state_dict(state)
        self.__dict__.update(_copy({k: v for k, v in state_dict.items() if k != "_schedulers"}))


class OneCycleLR(LRScheduler):
    """Smith's 1cycle policy, stepped once per batch: the lr rises from max_lr/div_factor to
    max_lr over the first pct_start of total_steps, then anneals to initial_lr/final_div_factor
    (three_phase: back down to the initial lr first, then to the minimum); with cycle_momentum
    the momentum (SGD) or beta1 (Adam, AdamW) moves the opposite way, between max_momentum
    and base_momentum. Give total_steps, or epochs and steps_per_epoch."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        name = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"{name}: expected a gpucnn.optim optimizer, but got {type(optimizer).__name__}")
        if total_steps is not None:
            self.total_steps = _positive_int(name, "total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _positive_int(name, "epochs", epochs) * _positive_int(name, "steps_per_epoch", steps_per_epoch)
        else:
            raise ValueError(f"{name}: give total_steps, or epochs and steps_per_epoch")
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"{name}: pct_start must be a float in [0, 1], but got pct_start={pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{name}: anneal_strategy must be 'cos' or 'linear', but got anneal_strategy={anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        rise_end = float(pct_start * self.total_steps) - 1
        # Each phase: the step it ends at, and the group entries it goes from and to (lr, momentum).
        if three_phase:
            self._schedule_phases = [
                [rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"],
                [self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"],
            ]
        else:
            self._schedule_phases = [
                [rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"],
            ]
        group = optimizer.param_groups[0]
        if last_epoch == -1:
            group.update(initial_lr=max_lr / div_factor, max_lr=max_lr, min_lr=max_lr / div_factor / final_div_factor)
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if "momentum" not in group and "betas" not in group:
                raise ValueError(f"{name}: cycle_momentum needs an optimizer with a momentum or betas")
            self.use_beta1 = "betas" in group
            if last_epoch == -1:
                if self.use_beta1:
                    group["betas"] = (max_momentum, *group["betas"][1:])
                else:
                    group["momentum"] = max_momentum
                group.update(max_momentum=max_momentum, base_momentum=base_momentum)
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, but total_steps is {self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, (end, lr_from, lr_to, m_from, m_to) in enumerate(self._schedule_phases):
                if step <= end or i == len(self._schedule_phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(group[lr_from], group[lr_to], pct))
                    momentum = self._anneal(group[m_from], group[m_to], pct) if self.cycle_momentum else None
                    break
                start = end
            if momentum is None:
                continue
            if self.use_beta1:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum
        return lrs
