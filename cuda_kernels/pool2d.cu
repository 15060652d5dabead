// Max and average pooling on NCHW arrays (no padding). Max pooling keeps, for each window,
// the in-window index ky*KW + kx of its maximum and routes the window's gradient to that
// position; average pooling splits the gradient evenly over the KH*KW inputs (seeds
// 001-003). Both backwards are gathers, one thread per input element, summing over the
// windows that cover it in a fixed order: overlapping windows need no atomics, and every
// run gives the same bits. No #include: the same text compiles with NVRTC, nvcc and the
// CPU emulator. Forward runs one thread per output element; all loops are grid-stride.

template <typename T>
__device__ bool is_nan(T v)
{
    return v != v;  // only NaN differs from itself
}

// The windows covering input pixel (ih, iw): window oh covers rows [oh*SH, oh*SH + KH), so
// those with ih - KH < oh*SH <= ih, and likewise for columns.
struct CoveringWindows {
    int oh_first, oh_last, ow_first, ow_last;

    __device__ CoveringWindows(int ih, int iw, int KH, int KW, int SH, int SW, int OH, int OW)
        : oh_first(ih < KH ? 0 : (ih - KH) / SH + 1), oh_last(min(ih / SH, OH - 1)),
          ow_first(iw < KW ? 0 : (iw - KW) / SW + 1), ow_last(min(iw / SW, OW - 1))
    {
    }
};

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
                const T v = window[(long long)ky * W + kx];
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

// dx[n, c, ih, iw] sums dy over the covering windows whose argmax chose (ih, iw).
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
        const CoveringWindows cover(ih, iw, KH, KW, SH, SW, OH, OW);
        T sum = T(0);
        for (int oh = cover.oh_first; oh <= cover.oh_last; ++oh) {
            for (int ow = cover.ow_first; ow <= cover.ow_last; ++ow) {
                const long long at = (nc * OH + oh) * OW + ow;
                if (argmax[at] == (ih - oh * SH) * KW + (iw - ow * SW))
                    sum += dy[at];
            }
        }
        dx[i] = sum;
    }
}

template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, int N, int C, int H, int W,
                                   int KH, int KW, int SH, int SW, int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ow = (int)(i % OW), oh = (int)(i / OW % OH);
        const long long nc = i / ((long long)OH * OW);
        const T* window = x + (nc * H + oh * SH) * W + ow * SW;
        T sum = T(0);
        for (int ky = 0; ky < KH; ++ky)
            for (int kx = 0; kx < KW; ++kx)
                sum += window[(long long)ky * W + kx];
        y[i] = sum / T(KH * KW);
    }
}

// dx[n, c, ih, iw] is the sum of dy over the covering windows, divided by the window size.
template <typename T>
__global__ void avg_pool2d_backward_gather(const T* __restrict__ dy, T* __restrict__ dx, int N, int C, int H,
                                           int W, int KH, int KW, int SH, int SW, int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int iw = (int)(i % W), ih = (int)(i / W % H);
        const long long nc = i / ((long long)H * W);
        const CoveringWindows cover(ih, iw, KH, KW, SH, SW, OH, OW);
        T sum = T(0);
        for (int oh = cover.oh_first; oh <= cover.oh_last; ++oh)
            for (int ow = cover.ow_first; ow <= cover.ow_last; ++ow)
                sum += dy[(nc * OH + oh) * OW + ow];
        dx[i] = sum / T(KH * KW);
    }
}
