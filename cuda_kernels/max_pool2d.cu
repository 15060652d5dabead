// Max pooling on NCHW arrays (no padding): forward keeps, for each window, the in-window index
// ky*KW + kx of its maximum; backward routes each window's gradient to that position (seeds
// 001-003). No #include: the same text compiles with NVRTC, nvcc and the CPU emulator.

template <typename T>
__device__ bool is_nan(T v)
{
    return v != v;  // only NaN differs from itself
}

// One thread per output element y[n, c, oh, ow], grid-stride.
template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax,
                                   int N, int C, int H, int W, int KH, int KW, int SH, int SW, int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ow = (int)(i % OW), oh = (int)(i / OW % OH);
        const long long nc = i / ((long long)OH * OW);
        const T* window = x + (nc * H + oh * SH) * W + ow * SW;
        T best = window[0];
        int best_at = 0;
        for (int ky = 0; ky < KH; ++ky) {
            for (int kx = 0; kx < KW; ++kx) {
                const T v = window[ky * W + kx];
                // np.argmax's rule: the first maximum wins a tie (strictly greater to replace),
                // and the first NaN wins outright and stays, as no comparison with NaN is true.
                if (v > best || (is_nan(v) && !is_nan(best))) {
                    best = v;
                    best_at = ky * KW + kx;
                }
            }
        }
        y[i] = best;
        argmax[i] = best_at;
    }
}

// A gather, one thread per input element: dx[n, c, ih, iw] sums dy over the windows that
// cover (ih, iw) and whose argmax chose it, in a fixed order. Overlapping windows need no
// atomics, and every run gives the same bits.
template <typename T>
__global__ void max_pool2d_backward_gather(const T* __restrict__ dy, const int* __restrict__ argmax,
                                           T* __restrict__ dx, int N, int C, int H, int W, int KH, int KW,
                                           int SH, int SW, int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int iw = (int)(i % W), ih = (int)(i / W % H);
        const long long nc = i / ((long long)H * W);
        // Window oh covers rows [oh*SH, oh*SH + KH): those with ih - KH < oh*SH <= ih.
        const int oh_first = ih < KH ? 0 : (ih - KH) / SH + 1, oh_last = min(ih / SH, OH - 1);
        const int ow_first = iw < KW ? 0 : (iw - KW) / SW + 1, ow_last = min(iw / SW, OW - 1);
        T sum = T(0);
        for (int oh = oh_first; oh <= oh_last; ++oh) {
            for (int ow = ow_first; ow <= ow_last; ++ow) {
                const long long at = (nc * OH + oh) * OW + ow;
                if (argmax[at] == (ih - oh * SH) * KW + (iw - ow * SW))
                    sum += dy[at];
            }
        }
        dx[i] = sum;
    }
}
