"""The op contract (see `gpucnn.backends`) on device "cuda": launches of cuda_kernels/*.cu.

The same functions drive a GPU through `cupy.RawModule` and the CPU through
`gpucnn.emulator.RawModule` (GPUCNN_CUDA_EMULATOR=1): both compile the same .cu text, and
`launch.py` gives both the same grids. One module per kernel family, beside its .cu file:
a new family is a new module here (declaring its kernels) and one line below.
"""
from . import _kernels
from ._kernels import KERNEL_OPTIONS, kernel_source, name_expressions
from .activation import (gelu_backward, gelu_forward, leaky_relu_backward, leaky_relu_forward, relu_backward,
                         relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward, tanh_forward)
from .adaptive_pool import adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward
from .batchnorm import (batch_norm_backward_data, batch_norm_backward_reduce, batch_norm_forward, batch_norm_invstd,
                        batch_norm_statistics, batch_norm_update_running)
from .conv import conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight, conv2d_forward
from .dropout import dropout_apply
from .linear import matmul
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward

# Every family above has declared its kernels by now.
KERNEL_FILES = _kernels.kernel_files()
