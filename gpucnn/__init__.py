"""gpucnn: a convolutional-network library whose GPU path is its own CUDA kernels
(loaded by CuPy) and whose CPU path is NumPy, behind one PyTorch-style layer API."""
from . import cuda, functional, nn, optim
from .nn.init import manual_seed
from .precision import get_float32_matmul_precision, set_float32_matmul_precision

__version__ = "0.1.0"
__all__ = ["cuda", "functional", "get_float32_matmul_precision", "manual_seed", "nn", "optim",
           "set_float32_matmul_precision", "__version__"]
