// Average pooling on NCHW arrays (no padding): forward takes each window's mean; backward
// splits each window's gradient evenly over its KH*KW inputs (seeds 001-003). No #include:
// the same text compiles with NVRTC, nvcc and the CPU emulator.

// One thread per output element y[n, c, oh, ow], grid-stride.
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
                sum += window[ky * W + kx];
        y[i] = sum / T(KH * KW);
    }
}

// A gather, one thread per input element: dx[n, c, ih, iw] is the sum of dy over the windows
// covering (ih, iw), divided by the window size. No atomics; every run gives the same bits.
template <typename T>
__global__ void avg_pool2d_backward_gather(const T* __restrict__ dy, T* __restrict__ dx, int N, int C, int H,
                                           int W, int KH, int KW, int SH, int SW, int OH, int OW)
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
        for (int oh = oh_first; oh <= oh_last; ++oh)
            for (int ow = ow_first; ow <= ow_last; ++ow)
                sum += dy[(nc * OH + oh) * OW + ow];
        dx[i] = sum / T(KH * KW);
    }
}
