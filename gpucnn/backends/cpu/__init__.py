"""NumPy implementations of the op contract (see `gpucnn.backends`), one module per kernel family.

A new family is a new module here and one line below.
"""
from ._common import get_num_threads, set_num_threads
from .activation import (gelu_backward, gelu_forward, leaky_relu_backward, leaky_relu_forward, relu_backward,
                         relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward)
from .adaptive_pool import adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward
from .batchnorm import (batch_norm_backward_data, batch_norm_backward_reduce, batch_norm_forward, batch_norm_invstd,
                        batch_norm_statistics, batch_norm_update_running)
from .conv import (conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight, conv2d_forward, rot180,
                   spread_to_stride1)
from .dropout import dropout_apply
from .linear import matmul
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
