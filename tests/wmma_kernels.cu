// Kernels for tests/test_emulator_mma.py: TF32 warp matrix products through nvcuda::wmma,
// and deliberately wrong uses of it that the emulator's checking mode must report.
#include <mma.h>

using namespace nvcuda;

using FragmentA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using Accumulator = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

template <class Fragment>
__device__ void round_to_tf32(Fragment& f) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

// One warp: C (16 x 16, row-major) = A (16 x K, row-major) B (K x 16) + C, B laid out as
// LayoutB says with leading dimension ldb (16 row-major, K column-major), so that its rows
// k... start b_step * k floats in (16 row-major, 1 column-major). K is a multiple of 8. `round` = 0 leaves the operands' low bits
// to the tensor core, which ignores them.
template <class LayoutB>
__global__ void __launch_bounds__(32) wmma_product(const float* A, const float* B, float* C, int K, int b_step,
                                                   int ldb, int round) {
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LayoutB> b;
    FragmentA a;
    Accumulator c;
    wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
    for (int k = 0; k < K; k += 8) {
        wmma::load_matrix_sync(a, A + k, K);
        wmma::load_matrix_sync(b, B + static_cast<long long>(b_step) * k, ldb);
        if (round) {
            round_to_tf32(a);
            round_to_tf32(b);
        }
        wmma::mma_sync(c, a, b, c);
    }
    wmma::store_matrix_sync(C, c, 16, wmma::mem_row_major);
}

// Four warps compute a 32 x 32 tile of C (M x N) = A (M x K) B (K x N), all row-major, any
// sizes: operands are staged, zero-padded, in shared memory 8 columns of A at a time, and the
// result through shared memory to the rows and columns that exist.
extern "C" __global__ void __launch_bounds__(128) wmma_tiled(const float* A, const float* B, float* C, int M, int N,
                                                             int K) {
    __align__(32) __shared__ float As[32][8];
    __align__(32) __shared__ float Bs[8][32];
    __align__(32) __shared__ float Cs[32][32];
    const int warp = threadIdx.x / 32, wr = warp / 2 * 16, wc = warp % 2 * 16;
    const long long row0 = 32LL * blockIdx.y, col0 = 32LL * blockIdx.x;
    FragmentA a;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
    Accumulator c;
    wmma::fill_fragment(c, 0.0f);
    for (int k0 = 0; k0 < K; k0 += 8) {
        for (int e = threadIdx.x; e < 32 * 8; e += 128) {
            const long long r = row0 + e / 8, k = k0 + e % 8, kb = k0 + e / 32, cb = col0 + e % 32;
            As[e / 8][e % 8] = r < M && k < K ? wmma::__float_to_tf32(A[r * K + k]) : 0.0f;
            Bs[e / 32][e % 32] = kb < K && cb < N ? wmma::__float_to_tf32(B[kb * N + cb]) : 0.0f;
        }
        __syncthreads();
        wmma::load_matrix_sync(a, &As[wr][0], 8);
        wmma::load_matrix_sync(b, &Bs[0][wc], 32);
        wmma::mma_sync(c, a, b, c);
        __syncthreads();
    }
    wmma::store_matrix_sync(&Cs[wr][wc], c, 32, wmma::mem_row_major);
    __syncthreads();
    for (int e = threadIdx.x; e < 32 * 32; e += 128) {
        const long long r = row0 + e / 32, col = col0 + e % 32;
        if (r < M && col < N) C[r * N + col] = Cs[e / 32][e % 32];
    }
}

extern "C" __global__ void __launch_bounds__(32) to_tf32(const float* x, float* y, int n) {
    for (int i = threadIdx.x; i < n; i += 32) y[i] = wmma::__float_to_tf32(x[i]);
}

// Bug: rows 8..23 of a 16-row shared tile.
extern "C" __global__ void __launch_bounds__(32) wmma_load_past_shared(const float* x, float* y) {
    __align__(32) __shared__ float tile[16][8];
    for (int e = threadIdx.x; e < 16 * 8; e += 32) tile[e / 8][e % 8] = x[e];
    __syncwarp();
    FragmentA a;
    wmma::load_matrix_sync(a, &tile[8][0], 8);
    y[threadIdx.x] = a.x[0];
}

// Bug: the tile is loaded before anything was written to it.
extern "C" __global__ void __launch_bounds__(32) wmma_load_unwritten(float* y) {
    __align__(32) __shared__ float tile[16][8];
    FragmentA a;
    wmma::load_matrix_sync(a, &tile[0][0], 8);
    y[threadIdx.x] = a.x[0];
}

// Bug: warp 1 loads the tile warp 0 stores, with no __syncthreads in between.
extern "C" __global__ void __launch_bounds__(64) wmma_store_load_race(float* y) {
    __align__(32) __shared__ float tile[16][16];
    Accumulator c;
    if (threadIdx.x < 32) {
        wmma::fill_fragment(c, 1.0f);
        wmma::store_matrix_sync(&tile[0][0], c, 16, wmma::mem_row_major);
    } else {
        wmma::load_matrix_sync(c, &tile[0][0], 16, wmma::mem_row_major);
        y[threadIdx.x - 32] = c.x[0];
    }
}

// Bug: half of the warp skips the product.
extern "C" __global__ void __launch_bounds__(32) wmma_half_warp(const float* x, float* y) {
    if (threadIdx.x >= 16) return;
    FragmentA a;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> b;
    Accumulator c;
    wmma::fill_fragment(a, 1.0f);
    wmma::fill_fragment(b, 1.0f);
    wmma::fill_fragment(c, 0.0f);
    wmma::mma_sync(c, a, b, c);
    y[threadIdx.x] = c.x[0] + x[0];
}

// Bug: a tile pointer 16 bytes past a 32-byte boundary.
extern "C" __global__ void __launch_bounds__(32) wmma_misaligned(const float* x, float* y) {
    FragmentA a;
    wmma::load_matrix_sync(a, x + 4, 8);
    y[threadIdx.x] = a.x[0];
}

// Bug: the two halves of the warp load through different calls.
extern "C" __global__ void __launch_bounds__(32) wmma_divergent_loads(const float* x, float* y) {
    FragmentA a;
    if (threadIdx.x < 16)
        wmma::load_matrix_sync(a, x, 8);
    else
        wmma::load_matrix_sync(a, x + 128, 8);
    y[threadIdx.x] = a.x[0];
}
