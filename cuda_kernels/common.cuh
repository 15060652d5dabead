// What every kernel file shares. Kernel files include only the project's own headers
// (`#include "name.cuh"`), which gpucnn pastes into the text before compiling
// (gpucnn.backends.cuda._kernels.kernel_source): NVRTC, nvcc and the CPU emulator then
// compile one text, which needs no CUDA or system header.

// Every multiply-add is an explicit fused one, rounded once: the compiler may not choose
// (NVRTC runs with --fmad=false and the emulator with -ffp-contract=off), so a GPU and the
// emulator give the same bits. One name for both precisions: fmaf and fma.
__device__ __forceinline__ float fused_multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fused_multiply_add(double a, double b, double c) { return fma(a, b, c); }

// The threads of an elementwise kernel's block: launch.ELEMENTWISE_BLOCK, which launches them.
#define ELEMENTWISE_BLOCK 256

// i = this thread's index in the grid, then every gridDim.x * blockDim.x-th after it, below n:
// any n runs on a grid that launch.py caps. 64-bit, for arrays past 2^31 elements.
#define GRID_STRIDE_LOOP(i, n)                                                     \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)
