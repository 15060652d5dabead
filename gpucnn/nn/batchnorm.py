"""Batch normalization, as torch.nn.BatchNorm1d and BatchNorm2d: per channel, y = (x - mean)
/ sqrt(var + eps) * weight + bias, with the batch's mean and biased variance in training
(and without running statistics), the running ones in eval mode."""
import numbers

import numpy as np

from .. import checks, cuda, functional as F
from ..backends import ops_for
from .module import Module, Parameter


class _BatchNorm(Module):
    ranks = None    # the input ranks the layer takes
    layouts = None  # and how to name them in an error

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        name = type(self).__name__
        self.num_features = checks.positive(name, "num_features", num_features)
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
            raise ValueError(f"{name}: eps must be a non-negative number, but got eps={eps!r}")
        if momentum is not None and (not isinstance(momentum, numbers.Real) or isinstance(momentum, bool)
                                     or not 0 <= momentum <= 1):
            raise ValueError(f"{name}: momentum must be None or a number in [0, 1], but got momentum={momentum!r}")
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self.weight = Parameter(np.ones(num_features, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(num_features, np.float32)) if affine else None
        tracked = track_running_stats
        self.register_buffer("running_mean", np.zeros(num_features, np.float32) if tracked else None)
        self.register_buffer("running_var", np.ones(num_features, np.float32) if tracked else None)
        self.register_buffer("num_batches_tracked", np.array(0, np.int64) if tracked else None)
        self._x3 = None

    def _params(self):
        return (self.weight.data, self.bias.data) if self.affine else (None, None)

    def forward(self, x):
        name = type(self).__name__
        checks.float_array(name, "input", x)
        if x.ndim not in self.ranks:
            raise ValueError(f"{name}: expected {self.layouts} input, but got input of shape "
                             f"{checks.shape_str(x.shape)} ({x.ndim}D)")
        checks.channels(name, x, self.num_features)
        weight, bias = self._params()
        x3 = F.batch_norm_args(name, x, self.running_mean, self.running_var, weight, bias, self.training)
        factor = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:  # a cumulative average of all batches so far
                factor = 1 / int(self.num_batches_tracked)
        y, self._mean, self._invstd, self._batch_stats = F.batch_norm_apply(
            x3, self.running_mean, self.running_var, weight, bias, self.training, factor, self.eps)
        self._x3, self._x_shape = x3, x.shape
        return y.reshape(x.shape)

    def backward(self, dy):
        x3 = self.saved("_x3")
        name = type(self).__name__
        cuda.check_same_device(f"{name}.backward", dy=dy, input=x3)
        checks.gradient(name, dy, self._x_shape, x3.dtype)
        weight = self.weight.data if self.affine else cuda.to_device(np.ones(x3.shape[1], x3.dtype), cuda.device_of(x3))
        ops = ops_for(dy)
        dy3 = dy.reshape(x3.shape)
        dweight, dbias = ops.batch_norm_backward_reduce(dy3, x3, self._mean, self._invstd)
        dx = ops.batch_norm_backward_data(dy3, x3, self._mean, self._invstd, weight, dweight, dbias,
                                          self._batch_stats)
        if self.affine:
            self.weight.accumulate(dweight)
            self.bias.accumulate(dbias)
        return dx.reshape(self._x_shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) input: statistics per channel over N (and L)."""
    ranks = (2, 3)
    layouts = "2D (N, C) or 3D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) input: statistics per channel over N, H and W."""
    ranks = (4,)
    layouts = "4D (N, C, H, W)"
