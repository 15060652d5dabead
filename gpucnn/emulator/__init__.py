"""Run CUDA kernels on the CPU from their own .cu source text, behind CuPy's RawModule API.

    from gpucnn.emulator import RawModule
    module = RawModule(code=source, name_expressions=("conv2d_forward<float>",))
    module.get_function("conv2d_forward<float>")(grid, block, args, shared_mem=0)

The source is compiled as C++ by g++ with a small header (cuda_host.h) that defines the
CUDA vocabulary; launch.h runs each block's threads as fibers meeting at __syncthreads().
See docs/emulator.md.
"""
from .module import RawKernel, RawModule

__all__ = ["RawKernel", "RawModule"]
