// Batch normalization over arrays seen as (N, C, S): S = H*W for BatchNorm2d, L (or 1) for
// BatchNorm1d, so channel c of sample n is the S contiguous values at (n*C + c)*S.
//
// The per-channel reductions (the mean and variance of forward, the two sums of backward)
// run one block per channel. Thread t visits the channel's elements t, t + BLOCK, ... in
// order and keeps one running partial; the BLOCK partials are then combined by a tree in
// shared memory, always pairing the same threads. No atomics: every run adds in the same
// order and gives the same bits. Each thread's partial covers only M / BLOCK of the
// channel's M = N*S values and the tree adds them log2(BLOCK) deep, so rounding grows with
// M / BLOCK + log2(BLOCK), not with M as one running sum would.

#include "common.cuh"

// Channel c's element i (0 <= i < N*S) in an (N, C, S) array.
__device__ __forceinline__ long long channel_element(long long i, int c, int C, int S)
{
    return (i / S * C + c) * S + i % S;
}

// Count, mean and M2 (the sum of squared deviations from the mean) of a run of values.
template <typename T>
struct Moments {
    long long count;
    T mean, m2;

    // Welford's update: no sum of squares that could cancel, however large the values.
    __device__ void add(T v)
    {
        ++count;
        const T delta = v - mean;
        mean = mean + delta / T(count);
        m2 = fused_multiply_add(delta, v - mean, m2);
    }

    // Chan, Golub and LeVeque's combination of two runs' moments.
    __device__ void merge(long long count_b, T mean_b, T m2_b)
    {
        const long long n = count + count_b;
        if (n == 0)
            return;
        const T delta = mean_b - mean;
        const T share_b = T(count_b) / T(n);
        mean = fused_multiply_add(delta, share_b, mean);
        m2 = fused_multiply_add(delta * delta, T(count) * share_b, m2 + m2_b);
        count = n;
    }
};

// mean[c] and the biased variance var[c] = M2 / M of each channel.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK) batch_norm_statistics(const T* __restrict__ x, T* __restrict__ mean,
                                                               T* __restrict__ var, int N, int C, int S)
{
    __shared__ long long s_count[BLOCK];
    __shared__ T s_mean[BLOCK];
    __shared__ T s_m2[BLOCK];
    const int t = threadIdx.x;
    const long long M = (long long)N * S;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        // The moments of x - pivot, pivot being the channel's first value: with values far
        // from 0 relative to their spread (1000 +- 0.01 in float32), a running mean near the
        // values would be rounded to their ulp, a sizeable part of the spread; x - pivot is
        // exact for values within a factor 2 of the pivot, and its mean is small.
        const T pivot = M > 0 ? x[channel_element(0, c, C, S)] : T(0);
        Moments<T> own = {0, T(0), T(0)};
        // Not unrolled: each element costs calls (channel_element's 64-bit division, the slow
        // path of Welford's), and unrolled copies keep more values live across them than
        // ptxas holds in registers: it spilled them to local memory (sm_50-62, sm_100).
#pragma unroll 1
        for (long long i = t; i < M; i += BLOCK)
            own.add(x[channel_element(i, c, C, S)] - pivot);
        s_count[t] = own.count;
        s_mean[t] = own.mean;
        s_m2[t] = own.m2;
        __syncthreads();
        for (int half = BLOCK / 2; half > 0; half /= 2) {
            if (t < half) {
                Moments<T> m = {s_count[t], s_mean[t], s_m2[t]};
                m.merge(s_count[t + half], s_mean[t + half], s_m2[t + half]);
                s_count[t] = m.count;
                s_mean[t] = m.mean;
                s_m2[t] = m.m2;
            }
            __syncthreads();
        }
        if (t == 0) {
            mean[c] = pivot + s_mean[0];
            var[c] = s_m2[0] / T(M);
        }
        __syncthreads();  // the shared arrays are reused for the next channel
    }
}

// invstd[c] = 1 / sqrt(var[c] + eps), with IEEE square root and division (no rsqrt).
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
batch_norm_invstd(const T* __restrict__ var, T* __restrict__ invstd, T eps, int C)
{
    GRID_STRIDE_LOOP(c, C)
        invstd[c] = T(1) / sqrt(var[c] + eps);
}

// The running statistics' moving average, in place: r = (1 - factor) r + factor b, where the
// batch's variance enters unbiased (times M / (M - 1)) as in torch.nn.BatchNorm2d.
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
batch_norm_update_running(const T* __restrict__ mean, const T* __restrict__ var, T* __restrict__ running_mean,
                          T* __restrict__ running_var, T factor, long long M, int C)
{
    const T keep = T(1) - factor, unbias = T(M) / T(M - 1);
    // A 32-bit index, as C is: with GRID_STRIDE_LOOP's 64-bit one, ptxas (CUDA 13.0, sm_90)
    // spilled the double instance to local memory.
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        running_mean[c] = fused_multiply_add(factor, mean[c], keep * running_mean[c]);
        running_var[c] = fused_multiply_add(factor, var[c] * unbias, keep * running_var[c]);
    }
}

// y = (x - mean) * invstd * weight + bias, elementwise.
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
batch_norm_forward(const T* __restrict__ x, const T* __restrict__ mean, const T* __restrict__ invstd,
                   const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ y, int N, int C, int S)
{
    const long long total = (long long)N * C * S;
    GRID_STRIDE_LOOP(i, total) {
        const int c = (int)(i / S % C);
        y[i] = fused_multiply_add((x[i] - mean[c]) * invstd[c], weight[c], bias[c]);
    }
}

// The per-channel sums of backward: dbias[c] = sum dy and dweight[c] = sum dy * xhat, with
// xhat = (x - mean) * invstd. Summed as sum dy * (x - mean), times invstd once at the end.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK) batch_norm_backward_reduce(const T* __restrict__ dy,
                                                                    const T* __restrict__ x,
                                                                    const T* __restrict__ mean,
                                                                    const T* __restrict__ invstd,
                                                                    T* __restrict__ dweight, T* __restrict__ dbias,
                                                                    int N, int C, int S)
{
    __shared__ T s_dy[BLOCK];
    __shared__ T s_dy_xmu[BLOCK];
    const int t = threadIdx.x;
    const long long M = (long long)N * S;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        const T mu = mean[c];
        T sum_dy = T(0), sum_dy_xmu = T(0);
#pragma unroll 1  // as in batch_norm_statistics
        for (long long i = t; i < M; i += BLOCK) {
            const long long at = channel_element(i, c, C, S);
            sum_dy += dy[at];
            sum_dy_xmu = fused_multiply_add(dy[at], x[at] - mu, sum_dy_xmu);
        }
        s_dy[t] = sum_dy;
        s_dy_xmu[t] = sum_dy_xmu;
        __syncthreads();
        for (int half = BLOCK / 2; half > 0; half /= 2) {
            if (t < half) {
                s_dy[t] += s_dy[t + half];
                s_dy_xmu[t] += s_dy_xmu[t + half];
            }
            __syncthreads();
        }
        if (t == 0) {
            dbias[c] = s_dy[0];
            dweight[c] = s_dy_xmu[0] * invstd[c];
        }
        __syncthreads();  // the shared arrays are reused for the next channel
    }
}

// dx, elementwise. With batch statistics (training, or no running statistics) the mean and
// variance depend on every x of the channel:
//     dx = weight * invstd * (dy - dbias / M - xhat * dweight / M)
// With running statistics they are constants: dx = weight * invstd * dy.
template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
batch_norm_backward_data(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ mean,
                         const T* __restrict__ invstd, const T* __restrict__ weight, const T* __restrict__ dweight,
                         const T* __restrict__ dbias, T* __restrict__ dx, int N, int C, int S, int batch_stats)
{
    const long long total = (long long)N * C * S;
    const T M = T((long long)N * S);
    GRID_STRIDE_LOOP(i, total) {
        const int c = (int)(i / S % C);
        T g = dy[i];
        if (batch_stats) {
            const T xhat = (x[i] - mean[c]) * invstd[c];
            g = fused_multiply_add(-xhat, dweight[c] / M, g - dbias[c] / M);
        }
        dx[i] = g * (weight[c] * invstd[c]);
    }
}
