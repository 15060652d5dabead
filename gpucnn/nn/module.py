"""Module, Parameter and Sequential: the bookkeeping every layer shares, with torch.nn's names."""
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from .. import checks, cuda


class Parameter:
    """A learnable array (`.data`) and the gradient accumulated into it (`.grad`, None until backward)."""

    def __init__(self, data):
        self.data = data
        self.grad = None

    def accumulate(self, grad):
        self.grad = grad if self.grad is None else self.grad + grad

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}, device={cuda.device_of(self.data)})"


class Module:
    """Base of every layer: y = m(x) runs forward, dx = m.backward(dy) runs backward.

    Parameters and sub-modules are registered in assignment order, which fixes the order
    and the dotted names of `parameters()` and `state_dict()` as in torch.nn.
    Buffers (`register_buffer`) are state that is not learned, such as BatchNorm's running
    statistics: in `state_dict()` and moved by `.to()`, but not in `parameters()`.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def register_buffer(self, name, value):
        """Make value (an array on the module's device, or None for none) the buffer `name`."""
        if name in self._parameters or name in self._modules:
            raise ValueError(f"{type(self).__name__}: cannot register buffer {name!r}: the name is taken")
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        if name in self._buffers:  # assigning to a buffer replaces its array
            self._buffers[name] = value
        elif isinstance(value, Parameter):
            self._parameters[name] = value
        elif name in self._parameters:  # None drops it from parameters() and state_dict(), as in torch.nn
            if value is not None:
                raise ValueError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} as parameter {name!r} "
                    f"(Parameter or None expected)"
                )
            self._parameters[name] = None
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def parameters_backward(self, dy):
        """backward(dy)'s parameter gradients, without the input gradient where skipping it saves
        work (a network's first layer, whose input is data: see Sequential.backward)."""
        self.backward(dy)

    def saved(self, attr):
        """What forward kept for backward; a clear error when backward comes first."""
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}: backward called before forward")
        return value

    def _named_members(self, table, prefix):
        """(dotted name, value) of every non-None entry of table (_parameters or _buffers), this
        module's first, then each child's."""
        for name, value in getattr(self, table).items():
            if value is not None:
                yield prefix + name, value
        for name, m in self._modules.items():
            yield from m._named_members(table, prefix + name + ".")

    def named_parameters(self, prefix=""):
        return self._named_members("_parameters", prefix)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        return self._named_members("_buffers", prefix)

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def _state_entries(self, prefix=""):
        """(dotted name, module, attribute, is parameter) of every array in state_dict(), in
        torch's order: a module's own parameters, then its own buffers, then each child's."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, self, name, True
        for name, b in self._buffers.items():
            if b is not None:
                yield prefix + name, self, name, False
        for name, m in self._modules.items():
            yield from m._state_entries(prefix + name + ".")

    def _floating_buffers(self):
        """(module, name, array) of every buffer of a floating dtype: those .float()/.double() cast."""
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    yield m, name, b

    def modules(self):
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        """Move every parameter and buffer to "cpu" or "cuda" in place (an optimizer built before keeps working)."""
        cuda.check_device(device)
        for p in self.parameters():
            p.data = cuda.to_device(p.data, device)
            if p.grad is not None:
                p.grad = cuda.to_device(p.grad, device)
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None:
                    setattr(m, name, cuda.to_device(b, device))
        return self

    def _cast(self, dtype):
        """Parameters and floating buffers to dtype; integer buffers (a batch count) stay as they are, as in torch."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        for m, name, b in list(self._floating_buffers()):
            setattr(m, name, b.astype(dtype))
        return self

    def float(self):
        return self._cast(np.float32)

    def double(self):
        return self._cast(np.float64)

    def state_dict(self):
        """{dotted name: NumPy array copy} of parameters and buffers, the keys, order and shapes of
        the torch.nn equivalent."""
        return OrderedDict((name, cuda.as_numpy(_array(m, attr, is_param)).copy())
                           for name, m, attr, is_param in self._state_entries())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers, keeping each one's device and dtype."""
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected state_dict to be dict-like, "
                             f"but got {type(state_dict).__name__}")
        entries = {name: (m, attr, is_param) for name, m, attr, is_param in self._state_entries()}
        own = OrderedDict((name, _array(*entry)) for name, entry in entries.items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"Error(s) in loading state_dict for {type(self).__name__}: "
                f"missing keys: {missing}, unexpected keys: {unexpected}"
            )
        for name, a in own.items():
            if name not in state_dict:
                continue
            value = cuda.as_numpy(state_dict[name])
            if tuple(value.shape) != tuple(a.shape):
                raise ValueError(
                    f"Error(s) in loading state_dict for {type(self).__name__}: size mismatch for {name}: "
                    f"copying a param with shape {checks.shape_str(value.shape)} from checkpoint, "
                    f"the shape in current model is {checks.shape_str(a.shape)}"
                )
        for name, a in own.items():
            if name in state_dict:
                value = cuda.to_device(np.array(cuda.as_numpy(state_dict[name]), dtype=a.dtype), cuda.device_of(a))
                m, attr, is_param = entries[name]
                if is_param:
                    getattr(m, attr).data = value
                else:
                    setattr(m, attr, value)
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _array(module, attr, is_param):
    """The array held by a parameter (its .data) or a buffer."""
    value = getattr(module, attr)
    return value.data if is_param else value


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse (the chain rule, seed 000)."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise ValueError(f"Sequential: argument {i} must be a Module, but got {type(m).__name__}")
            setattr(self, str(i), m)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self:
            x = m(x)
        return x

    def backward(self, dy, input_grad=True):
        """dx, after every layer's parameter gradients. With input_grad=False the first layer
        skips its input gradient and None is returned: what PyTorch does for an input that
        does not require grad (training data)."""
        layers = list(self)
        for m in reversed(layers[1:]):
            dy = m.backward(dy)
        if input_grad:
            return layers[0].backward(dy)
        layers[0].parameters_backward(dy)
        return None

    def parameters_backward(self, dy):
        self.backward(dy, input_grad=False)
