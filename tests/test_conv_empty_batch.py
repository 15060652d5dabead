"""A batch of 0 samples runs forward and backward on every device as in PyTorch: empty
outputs and input gradients, and parameter gradients of zeros (an empty sum)."""
import numpy as np
import pytest

from gpucnn import cuda, nn
from gpucnn.backends import cpu


@pytest.mark.parametrize("make, x_shape", [
    (lambda: nn.Conv2d(3, 4, 3, padding=1), (0, 3, 6, 6)),
    (lambda: nn.Conv2d(2, 5, (3, 2), stride=2), (0, 2, 7, 6)),
    (lambda: nn.Conv1d(1, 4, 5, stride=4, padding=2), (0, 1, 40)),
])
def test_empty_batch_gives_empty_outputs_and_zero_parameter_gradients(device, make, x_shape):
    conv = make().to(device)
    y = conv(cuda.to_device(np.zeros(x_shape, np.float32), device))
    assert y.shape[0] == 0
    dx = conv.backward(cuda.to_device(np.zeros(y.shape, np.float32), device))
    assert dx.shape == x_shape and cuda.device_of(dx) == device
    for p in (conv.weight, conv.bias):
        grad = cuda.as_numpy(p.grad)
        assert grad.shape == p.data.shape and grad.dtype == np.float32
        np.testing.assert_array_equal(grad, 0)


def test_numpy_weight_gradient_of_an_empty_batch_is_zeros_of_the_weights_shape():
    """Straight on the op, grouped and dilated too, in the inputs' dtype."""
    x, dy = np.zeros((0, 4, 9, 9)), np.zeros((0, 6, 5, 5))
    dw = cpu.conv2d_backward_weight(x, dy, (6, 2, 3, 3), (1, 1), (0, 0), (2, 2), 2)
    assert dw.shape == (6, 2, 3, 3) and dw.dtype == np.float64
    np.testing.assert_array_equal(dw, 0)
