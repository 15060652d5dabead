from .. import checks, cuda, functional as F
from ..backends import ops_for
from .module import Module


class ReLU(Module):
    """max(x, 0); backward passes dy where the output was positive (seed 003's activation derivative)."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        self._y = F.relu(x)
        return self._y

    def backward(self, dy):
        y = self.saved("_y")
        cuda.check_same_device("ReLU.backward", dy=dy, output=y)
        checks.gradient("ReLU", dy, y.shape, y.dtype)
        return ops_for(dy).relu_backward(dy, y)


class _Pointwise(Module):
    """An elementwise activation whose backward needs forward's input (saves = "input") or
    its output (saves = "output"), whichever its derivative is cheaper in."""
    saves = None

    def forward(self, x):
        checks.float_array(type(self).__name__, "input", x)
        y = self._forward(ops_for(x), x)
        self._kept = x if self.saves == "input" else y
        return y

    def backward(self, dy):
        kept = self.saved("_kept")
        name = type(self).__name__
        cuda.check_same_device(f"{name}.backward", dy=dy, **{self.saves: kept})
        checks.gradient(name, dy, kept.shape, kept.dtype)
        return self._backward(ops_for(dy), dy, kept)


class LeakyReLU(_Pointwise):
    """x where x > 0, else negative_slope * x."""
    saves = "input"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = F.leaky_relu_slope("LeakyReLU", negative_slope)

    def _forward(self, ops, x):
        return ops.leaky_relu_forward(x, self.negative_slope)

    def _backward(self, ops, dy, x):
        return ops.leaky_relu_backward(dy, x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Pointwise):
    """1 / (1 + e^-x); backward: dy y (1 - y)."""
    saves = "output"

    def _forward(self, ops, x):
        return ops.sigmoid_forward(x)

    def _backward(self, ops, dy, y):
        return ops.sigmoid_backward(dy, y)


class Tanh(_Pointwise):
    """tanh x; backward: dy (1 - y^2)."""
    saves = "output"

    def _forward(self, ops, x):
        return ops.tanh_forward(x)

    def _backward(self, ops, dy, y):
        return ops.tanh_backward(dy, y)


class GELU(_Pointwise):
    """x Phi(x) with Phi the standard normal CDF (the exact erf form), or its tanh
    approximation with approximate='tanh', as torch.nn.GELU."""
    saves = "input"

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = F.gelu_approximation("GELU", approximate)

    def _forward(self, ops, x):
        return ops.gelu_forward(x, self.approximate)

    def _backward(self, ops, dy, x):
        return ops.gelu_backward(dy, x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"
