// The convolution passes of conv2d.cuh on TF32 tensor cores, for float32 under
// gpucnn.set_float32_matmul_precision("high"). A module of its own: a failure to compile it
// leaves conv2d.cu's strict float32 and float64 kernels working.
//
// C = A B with operands gathered exactly as tiled_gemm gathers them (SliceLoader, a slice
// ahead, two shared buffers, one barrier per slice), k 8 at a time: one m16n8k8 step
// (mma_tf32.cuh). Each warp owns a WM x WN patch of the BM x BN tile, (WM/16) x (WN/8)
// accumulator fragments of 16 x 8. Each lane loads its own fragment elements from the shared
// k-major slices (A(m, k) at As[k][m], B(k, j) at Bs[k][j]) and rounds them to TF32 (cvt.rna:
// to nearest, ties away from zero; the tensor core itself would only drop the low bits). The
// products are exact and the sums float32, in the tensor core's own order. The accumulators
// are staged (StagedTile, in the slices' shared memory, as tiled_gemm's registers are) and
// stored as tiled_gemm stores.
// Before sm_80 there are no TF32 tensor cores: the kernels compile to a trap there, which the
// launcher never picks (conv.tensor_cores).

#include "conv2d.cuh"
#include "mma_tf32.cuh"

#if TF32_TENSOR_CORES
constexpr int TF32_K = 8;

// acc[i][j] += the product of one k slice, for the warp's fragments: A's rows wm*WM + 16i.. and
// B's columns wn*WN + 8j.. of the tile.
template <int BM, int BN, int WM, int WN>
__device__ void multiply_slice_tf32(const float (*As)[BM + shared_pad(TF32_K)],
                                    const float (*Bs)[BN + shared_pad(TF32_K)], int wm, int wn,
                                    float (&acc)[WM / 16][WN / 8][4])
{
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    unsigned a[WM / 16][4], b[WN / 8][2];
#pragma unroll
    for (int i = 0; i < WM / 16; ++i) {
        const int m = wm * WM + i * 16 + g;
        a[i][0] = tf32_round(As[t][m]);
        a[i][1] = tf32_round(As[t][m + 8]);
        a[i][2] = tf32_round(As[t + 4][m]);
        a[i][3] = tf32_round(As[t + 4][m + 8]);
    }
#pragma unroll
    for (int j = 0; j < WN / 8; ++j) {
        const int n = wn * WN + j * 8 + g;
        b[j][0] = tf32_round(Bs[t][n]);
        b[j][1] = tf32_round(Bs[t + 4][n]);
    }
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int j = 0; j < WN / 8; ++j)
            mma_m16n8k8_tf32(acc[i][j], a[i], b[j]);
}
#endif

template <int BM, int BN, int WM, int WN, typename OperandA, typename OperandB, typename Store>
__device__ void tiled_gemm_tf32(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                                const OperandB& b, const Store& store)
{
#if TF32_TENSOR_CORES
    constexpr int BK = TF32_K, THREADS = (BM / WM) * (BN / WN) * 32;
    using Shared = GemmShared<float, BM, BN, BK, Store::ALONG_ROWS>;
    constexpr int LDA = Shared::LDA, LDB = Shared::LDB;
    static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 8 == 0, "whole fragments per warp");
    __align__(32) __shared__ float shared[Shared::SIZE];
    const Shared smem{shared};
    const int warp = threadIdx.x / 32, wm = warp % (BM / WM), wn = warp / (BM / WM);
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    for (long long j0 = (long long)blockIdx.y * BN; j0 < J; j0 += (long long)gridDim.y * BN) {
        for (long long m0 = (long long)blockIdx.x * BM; m0 < M; m0 += (long long)gridDim.x * BM) {
            float acc[WM / 16][WN / 8][4] = {};
            for_each_slice<float, BM, BN, BK, THREADS>(
                m0, M, j0, J, k_begin, k_end, a, b, smem.as(), smem.bs(),
                [&](const float (*as)[LDA], const float (*bs)[LDB]) {
                    multiply_slice_tf32<BM, BN, WM, WN>(as, bs, wm, wn, acc);
                });
            for (int i = 0; i < WM / 16; ++i) {
                for (int j = 0; j < WN / 8; ++j) {
                    const int r = wm * WM + i * 16 + g, c = wn * WN + j * 8 + 2 * t;
                    smem.tile().at(r, c) = acc[i][j][0];
                    smem.tile().at(r, c + 1) = acc[i][j][1];
                    smem.tile().at(r + 8, c) = acc[i][j][2];
                    smem.tile().at(r + 8, c + 1) = acc[i][j][3];
                }
            }
            smem.tile().template write_out<THREADS>(store, m0, M, j0, J);
        }
    }
#else
    __trap();
#endif
}

template <int BM, int BN, int WM, int WN>
struct Tf32Gemm {
    template <typename OperandA, typename OperandB, typename Store>
    __device__ static void run(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                               const OperandB& b, const Store& store)
    {
        tiled_gemm_tf32<BM, BN, WM, WN>(M, J, k_begin, k_end, a, b, store);
    }
};

// The TF32 kernels' (tiled_gemm_tf32's THREADS): a warp per WM x WN patch of the BM x BN tile.
#define TF32_THREADS ((BM / WM) * (BN / WN) * 32)

template <int BM, int BN, int WM, int WN>
__global__ void __launch_bounds__(TF32_THREADS, 1)
conv2d_forward_tf32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                    float* __restrict__ y, int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, int SH,
                    int SW, int PH, int PW, int DH, int DW, int G)
{
    forward_pass<float, Tf32Gemm<BM, BN, WM, WN>>(x, w, b, y,
                                                  {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G});
}

template <int BM, int BN, int WM, int WN>
__global__ void __launch_bounds__(TF32_THREADS, 1)
conv2d_backward_data_full_rot180_tf32(const float* __restrict__ dy, const float* __restrict__ w,
                                      float* __restrict__ dx, int N, int C, int H, int W, int O, int KH, int KW,
                                      int OH, int OW, int SH, int SW, int PH, int PW, int DH, int DW, int G,
                                      int first_h, int pixels_h, int tap_h, int taps_h, int tap_step_h, int q_h,
                                      int dy_step_h, int first_w, int pixels_w, int tap_w, int taps_w,
                                      int tap_step_w, int q_w, int dy_step_w)
{
    backward_data_pass<float, Tf32Gemm<BM, BN, WM, WN>>(
        dy, w, dx, {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G}, PHASES);
}

template <int BM, int BN, int WM, int WN>
__global__ void __launch_bounds__(TF32_THREADS, 1)
conv2d_backward_weight_tf32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partials,
                            int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, int SH, int SW,
                            int PH, int PW, int DH, int DW, int G, long long chunk, int chunks)
{
    backward_weight_pass<float, Tf32Gemm<BM, BN, WM, WN>>(
        x, dy, partials, {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G}, chunk, chunks);
}
