// Convolution on NCHW arrays with filters w of shape (O, C/G, KH, KW), dilation (DH, DW) and
// G groups, on the SIMT cores in float and double: forward, backward-data (the seeds' "full"
// convolution with the filter turned 180 degrees), weight and bias gradients. The passes and
// their operands are conv2d.cuh's, the GEMM engine gemm.cuh's; conv2d_tf32.cu runs the same
// passes on TF32 tensor cores, in its own module.
//
// Each block computes a BM x BN tile of C, each of its threads a TM x TN patch of that tile
// in registers (tiled_gemm). One thread sums each element of C, over k in increasing order:
// every run gives the same bits (no atomics anywhere in this file). The weight gradient's
// reduction runs over the whole batch, so it is cut into chunks of a length fixed by the
// shapes alone (blockIdx.z picks one); a second kernel adds the chunks' partial sums in
// chunk order.

#include "conv2d.cuh"

// The SIMT cores' GEMM, in T: conv2d.cuh's passes run their products on it.
template <typename T, int BM, int BN, int BK, int TM, int TN>
struct SimtGemm {
    template <typename OperandA, typename OperandB, typename Store>
    __device__ static void run(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                               const OperandB& b, const Store& store)
    {
        tiled_gemm<T, BM, BN, BK, TM, TN>(M, J, k_begin, k_end, a, b, store);
    }
};

// The threads of a GEMM kernel's block (tiled_gemm's THREADS). The kernels declare at least
// 1 block per SM: with the thread count alone, ptxas (sm_80, CUDA 13.0) capped some instances
// at 64 or 128 registers and spilled to local memory.
#define GEMM_THREADS ((BM / TM) * (BN / TN))

template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__(GEMM_THREADS, 1)
conv2d_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
               int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, int SH, int SW, int PH, int PW,
               int DH, int DW, int G)
{
    forward_pass<T, SimtGemm<T, BM, BN, BK, TM, TN>>(x, w, b, y,
                                                     {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G});
}

template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__(GEMM_THREADS, 1)
conv2d_backward_data_full_rot180(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,
                                 int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW,
                                 int SH, int SW, int PH, int PW, int DH, int DW, int G,
                                 int first_h, int pixels_h, int tap_h, int taps_h, int tap_step_h, int q_h,
                                 int dy_step_h, int first_w, int pixels_w, int tap_w, int taps_w, int tap_step_w,
                                 int q_w, int dy_step_w)
{
    backward_data_pass<T, SimtGemm<T, BM, BN, BK, TM, TN>>(
        dy, w, dx, {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G}, PHASES);
}

template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__(GEMM_THREADS, 1)
conv2d_backward_weight(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ partials,
                       int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, int SH, int SW,
                       int PH, int PW, int DH, int DW, int G, long long chunk, int chunks)
{
    backward_weight_pass<T, SimtGemm<T, BM, BN, BK, TM, TN>>(
        x, dy, partials, {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G}, chunk, chunks);
}

// out[i] = partials[0][i] + partials[1][i] + ... in chunk order, one thread per element
// (BLOCK threads a block).
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
add_partial_sums(const T* __restrict__ partials, T* __restrict__ out, int chunks, long long n)
{
    GRID_STRIDE_LOOP(i, n) {
        T sum = partials[i];
        for (int z = 1; z < chunks; ++z)
            sum += partials[z * n + i];
        out[i] = sum;
    }
}

// db[o] = sum over (n, oh, ow) of dy[n, o, oh, ow], in two passes so that a layer with few
// channels still keeps many blocks busy. Block (z, o) sums positions [z * chunk, (z + 1) *
// chunk) of channel o, position i = n*OH*OW + p, into partials[z * O + o]: thread t the
// positions t, t + BLOCK, ... of it in order, then a fixed tree adds the BLOCK partial sums;
// add_partial_sums then adds the chunks in chunk order (with one chunk, partials is db). A
// thread splits its first position into (n, p) once and steps both by BLOCK: no division
// per element.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK) conv2d_backward_bias(const T* __restrict__ dy, T* __restrict__ partials, int N,
                                                              int O, int OH, int OW, long long chunk, int chunks)
{
    __shared__ T partial[BLOCK];
    const int t = threadIdx.x;
    const long long OHW = (long long)OH * OW, positions = N * OHW;
    const long long step_n = BLOCK / OHW, step_p = BLOCK % OHW;
    for (int o = blockIdx.y; o < O; o += gridDim.y) {
        for (long long z = blockIdx.x; z < chunks; z += gridDim.x) {
            const long long end = min((z + 1) * chunk, positions);
            long long i = z * chunk + t, n = i / OHW, p = i % OHW;
            T sum = T(0);
            for (; i < end; i += BLOCK) {
                sum += dy[(n * O + o) * OHW + p];
                n += step_n;
                p += step_p;
                if (p >= OHW) {
                    p -= OHW;
                    ++n;
                }
            }
            partial[t] = sum;
            __syncthreads();
            for (int half = BLOCK / 2; half > 0; half /= 2) {
                if (t < half)
                    partial[t] += partial[t + half];
                __syncthreads();
            }
            if (t == 0)
                partials[z * O + o] = partial[0];
            __syncthreads();  // partial is reused for the next chunk
        }
    }
}
