"""A NaN or inf in the gradient reaches only the inputs it belongs to, as in PyTorch.

ReLU and max pooling route dy by a mask; routing by multiplying with the mask would turn
a masked-out NaN or inf into NaN (0 * inf is NaN) at inputs that should get exactly 0.
"""
import numpy as np
import pytest

from gpucnn import nn
from gpucnn.cuda import as_numpy, to_device


def backward_of(module, x, dy, device):
    module.to(device)
    module(to_device(x, device))
    return as_numpy(module.backward(to_device(dy, device)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_relu_sends_a_nonfinite_gradient_only_where_the_input_was_positive(device, bad):
    x = np.array([[-1.0, 2.0, -3.0, 4.0]])
    dy = np.array([[bad, 1.0, bad, bad]])
    dx = backward_of(nn.ReLU(), x, dy, device)
    np.testing.assert_array_equal(dx, [[0.0, 1.0, 0.0, bad]])


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1)], ids=["disjoint", "overlapping"])
def test_max_pool_sends_a_nonfinite_gradient_only_to_the_argmax(device, kernel, stride):
    x = np.arange(16.0).reshape(1, 1, 4, 4)  # every window's maximum is its bottom-right corner
    pool = nn.MaxPool2d(kernel, stride)
    dy = np.full(pool(x).shape, np.inf)
    dx = backward_of(pool, x, dy, device)
    chosen = np.zeros(x.shape, dtype=bool)
    last = kernel - 1
    chosen[..., last::stride, last::stride] = True
    np.testing.assert_array_equal(dx, np.where(chosen, np.inf, 0.0))
