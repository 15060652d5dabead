"""What SGD, Adam and AdamW share: the parameter list, lazily created per-parameter state, and
state_dict / load_state_dict for checkpoints."""
import numpy as np

from .. import checks, cuda


class Optimizer:
    def __init__(self, params, **hyper):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if hyper.get("lr", 0) < 0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate: {hyper['lr']} (must be >= 0)")
        if hyper.get("weight_decay", 0) < 0:
            raise ValueError(f"{type(self).__name__}: invalid weight_decay value: {hyper['weight_decay']} (must be >= 0)")
        self.hyper = hyper
        self.state = {}  # parameter index -> {name: array or number}, created on first step

    @property
    def param_groups(self):
        """torch's list of parameter groups: here always one, the hyperparameters, which the
        schedulers in lr_scheduler read and write (lr, and initial_lr once one is attached)."""
        return [self.hyper]

    @property
    def lr(self):
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value):
        self.hyper["lr"] = value

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.update(p, p.grad, self._state_beside(i, p))

    def _state_beside(self, i, p):
        """The parameter's state, moved or cast along if the model was moved (m.to) or cast
        (m.double()) after it was made: a float32 momentum would round every float64 step."""
        state = self.state.setdefault(i, {})
        device, dtype = cuda.device_of(p.data), p.data.dtype
        for k, v in state.items():
            if hasattr(v, "shape") and (cuda.device_of(v) != device or v.dtype != dtype):
                state[k] = cuda.to_device(v.astype(dtype, copy=False), device)
        return state

    def update(self, p, grad, state):
        raise NotImplementedError

    def state_dict(self):
        """{"hyper": {...}, "state": {index: {name: NumPy array or number}}}."""
        state = {i: {k: cuda.as_numpy(v).copy() if hasattr(v, "shape") else v for k, v in s.items()}
                 for i, s in self.state.items()}
        return {"hyper": dict(self.hyper), "state": state}

    def load_state_dict(self, state_dict):
        """Restore a copy of the state onto each parameter's own device and dtype."""
        where = f"{type(self).__name__}.load_state_dict"
        for i, s in state_dict["state"].items():
            if not 0 <= int(i) < len(self.params):
                raise ValueError(f"{where}: state for parameter {i}, but the optimizer has {len(self.params)} parameters")
            shape = self.params[int(i)].data.shape
            for k, v in s.items():
                if hasattr(v, "shape") and tuple(v.shape) != tuple(shape):
                    raise ValueError(
                        f"{where}: {k} of parameter {i} has shape {checks.shape_str(v.shape)}, "
                        f"but the parameter has shape {checks.shape_str(shape)}"
                    )
        self.hyper.update(state_dict["hyper"])
        self.state = {}
        for i, s in state_dict["state"].items():
            p = self.params[int(i)]
            self.state[int(i)] = {
                k: cuda.to_device(np.array(cuda.as_numpy(v), dtype=p.data.dtype), cuda.device_of(p.data))
                if hasattr(v, "shape") else v
                for k, v in s.items()
            }
