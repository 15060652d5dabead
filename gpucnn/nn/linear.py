"""Flatten and Linear: the fully connected head of the seeds' INPUT -> [[CONV]*N -> POOL?]*M -> [FC]*K."""
from .. import checks, cuda, functional as F
from ..backends import ops_for
from . import init
from .module import Module, Parameter


class Flatten(Module):
    """Flatten dims start_dim..end_dim into one (a 5x5x2 map becomes 50 features, seed 004)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim
        self._x_shape = None
        self._y_meta = None  # (shape, dtype) of the output, which backward's dy must have

    def forward(self, x):
        checks.float_array("Flatten", "input", x)
        for dim in (self.start_dim, self.end_dim):
            if x.ndim == 0 or not -x.ndim <= dim < x.ndim:
                raise ValueError(
                    f"Flatten: dimension out of range (expected to be in range of [{-x.ndim}, {x.ndim - 1}], "
                    f"but got {dim}) for input of shape {checks.shape_str(x.shape)}"
                )
        start = self.start_dim % x.ndim
        end = self.end_dim % x.ndim
        if start > end:
            raise ValueError(f"Flatten: start_dim {self.start_dim} comes after end_dim {self.end_dim} for input of shape {checks.shape_str(x.shape)}")
        self._x_shape = x.shape
        y = x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])
        self._y_meta = (y.shape, y.dtype)
        return y

    def backward(self, dy):
        checks.gradient("Flatten", dy, *self.saved("_y_meta"))
        return dy.reshape(self._x_shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), as torch.nn.Linear."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = checks.positive("Linear", "in_features", in_features)
        self.out_features = checks.positive("Linear", "out_features", out_features)
        self.weight = Parameter(init.kaiming_uniform((out_features, in_features), in_features))
        self.bias = Parameter(init.bias_uniform((out_features,), in_features)) if bias else None
        self._x = None

    def forward(self, x):
        b = self.bias.data if self.bias is not None else None
        F.linear_args("Linear", x, self.weight.data, b)
        self._x = x
        return F.linear_forward(x, self.weight.data, b)

    def backward(self, dy):
        """dx = dy W, and the parameters' gradients; every product 2-D, as the forward's."""
        self.parameters_backward(dy)
        w = self.weight.data
        return ops_for(w).matmul(dy.reshape(-1, self.out_features), w).reshape(dy.shape[:-1] + (self.in_features,))

    def parameters_backward(self, dy):
        x = self.saved("_x")
        cuda.check_same_device("Linear.backward", dy=dy, input=x)
        checks.gradient("Linear", dy, x.shape[:-1] + (self.out_features,), x.dtype)
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        self.weight.accumulate(ops_for(x2).matmul(dy2.T, x2))
        if self.bias is not None:
            self.bias.accumulate(dy2.sum(axis=0))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
