"""NumPy implementations of the op contract (see `gpucnn.backends`), one module per kernel family.

A new family is a new module here and one line below.
"""
from ._common import get_num_threads, set_num_threads
from .activation import relu_backward, relu_forward
from .conv import (conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight, conv2d_forward, rot180,
                   spread_to_stride1)
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
