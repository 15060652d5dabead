// Kernels for tests/test_emulator_mma.py: TF32 tensor-core products through mma_tf32.cuh, each
// lane loading and storing its own registers where the PTX ISA lays them out, and wrong uses
// that the emulator must report. Compiled as gpucnn compiles its kernels (with_headers).
#include "mma_tf32.cuh"

// One warp: D (16 x 8) = A (16 x 8) B (8 x 8) + C, all row-major. round = 0 hands the tensor
// core the operands' bits as they are, which reads only their TF32 part.
extern "C" __global__ void __launch_bounds__(32) fragment_product(const float* A, const float* B, const float* C,
                                                                  float* D, int round)
{
    const int g = threadIdx.x / 4, t = threadIdx.x % 4;
    const float a_values[4] = {A[g * 8 + t], A[(g + 8) * 8 + t], A[g * 8 + t + 4], A[(g + 8) * 8 + t + 4]};
    const float b_values[2] = {B[t * 8 + g], B[(t + 4) * 8 + g]};
    unsigned a[4], b[2];
    for (int i = 0; i < 4; ++i)
        a[i] = round ? tf32_round(a_values[i]) : (unsigned)__float_as_int(a_values[i]);
    for (int i = 0; i < 2; ++i)
        b[i] = round ? tf32_round(b_values[i]) : (unsigned)__float_as_int(b_values[i]);
    float acc[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    mma_m16n8k8_tf32(acc, a, b);
    D[g * 8 + 2 * t] = acc[0];
    D[g * 8 + 2 * t + 1] = acc[1];
    D[(g + 8) * 8 + 2 * t] = acc[2];
    D[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

extern "C" __global__ void __launch_bounds__(32) to_tf32(const float* x, float* y, int n)
{
    for (int i = threadIdx.x; i < n; i += 32)
        y[i] = __int_as_float((int)tf32_round(x[i]));
}

// Lane (g, t)'s registers of A's rows 0..15 from a row-major tile with rows of 8.
__device__ void load_a(unsigned (&a)[4], const float (*tile)[8])
{
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    a[0] = tf32_round(tile[g][t]);
    a[1] = tf32_round(tile[g + 8][t]);
    a[2] = tf32_round(tile[g][t + 4]);
    a[3] = tf32_round(tile[g + 8][t + 4]);
}

// Bug: A's rows 8..23 of a 16-row shared tile.
extern "C" __global__ void __launch_bounds__(32) load_past_shared(const float* x, float* y)
{
    __shared__ float tile[16][8];
    for (int e = threadIdx.x; e < 16 * 8; e += 32)
        tile[e / 8][e % 8] = x[e];
    __syncwarp();
    unsigned a[4];
    load_a(a, &tile[8]);
    y[threadIdx.x] = __int_as_float((int)a[0]);
}

// Bug: the tile is read before anything was written to it.
extern "C" __global__ void __launch_bounds__(32) load_unwritten(float* y)
{
    __shared__ float tile[16][8];
    unsigned a[4];
    load_a(a, tile);
    y[threadIdx.x] = __int_as_float((int)a[0]);
}

// Bug: half of the warp skips the product.
extern "C" __global__ void __launch_bounds__(32) half_warp(const float* x, float* y)
{
    if (threadIdx.x >= 16)
        return;
    const unsigned a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float acc[4] = {x[0], x[0], x[0], x[0]};
    mma_m16n8k8_tf32(acc, a, b);
    y[threadIdx.x] = acc[0];
}

// Bug: the two halves of the warp run different mma instructions.
extern "C" __global__ void __launch_bounds__(32) divergent_products(const float* x, float* y)
{
    const unsigned a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
    float low[4] = {x[0], x[1], x[2], x[3]}, high[4] = {x[4], x[5], x[6], x[7]};
    if (threadIdx.x < 16)
        mma_m16n8k8_tf32(low, a, b);
    else
        mma_m16n8k8_tf32(high, a, b);
    y[threadIdx.x] = low[0] + high[0];
}
