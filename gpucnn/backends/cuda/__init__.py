"""The op contract (see `gpucnn.backends`) on device "cuda": launches of cuda_kernels/*.cu.

The same functions drive a GPU through `cupy.RawModule` and the CPU through
`gpucnn.emulator.RawModule` (GPUCNN_CUDA_EMULATOR=1): both compile the same .cu text, and
`launch.py` gives both the same grids. One module per kernel family, beside its .cu file:
a new family is a new module here (declaring its kernels) and one line below.
"""
from . import _kernels
from ._kernels import KERNEL_OPTIONS, kernel_source, name_expressions
from .activation import relu_backward, relu_forward
from .conv import conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight, conv2d_forward
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward

# Every family above has declared its kernels by now.
KERNEL_FILES = _kernels.kernel_files()
