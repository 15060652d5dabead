"""Run CUDA kernels on the CPU from their own .cu source text, behind CuPy's RawModule API.

    from gpucnn.emulator import RawModule
    module = RawModule(code=source, name_expressions=("conv2d_forward<float>",))
    module.get_function("conv2d_forward<float>")(grid, block, args, shared_mem=0)

The source is compiled as C++ by g++ with a small header (cuda_host.h) that defines the
CUDA vocabulary; launch.h runs each block's threads as fibers meeting at __syncthreads().
RawModule(..., sanitize=True), or GPUCNN_EMULATOR_SANITIZE=1, turns on the checking mode:
out-of-bounds and misaligned accesses, races, uninitialized reads and barrier misuse end the
launch with a `KernelError` naming the check, the threads and the address. A TF32
tensor-core product (mma.sync m16n8k8; tensor_core.h) gives the bits of the architecture that
GPUCNN_EMULATOR_ARCH names, as MMA-Sim models it: sm_80, sm_86, sm_89, sm_90 (the default),
sm_100 or sm_120. See docs/emulator.md.
"""
from .build import sanitize_enabled
from .memory import mark_uninitialized
from .module import KernelError, RawKernel, RawModule

__all__ = ["KernelError", "RawKernel", "RawModule", "mark_uninitialized", "sanitize_enabled"]
