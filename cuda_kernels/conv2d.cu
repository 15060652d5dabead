// Convolution on NCHW arrays with filters w of shape (O, C, KH, KW): forward, backward-data
// (the seeds' "full" convolution with the filter turned 180 degrees), weight and bias
// gradients. No #include: the same text compiles with NVRTC, nvcc and the CPU emulator.
//
// Forward, backward-data and weight gradient are each one matrix product C = A B whose
// operands are never stored (implicit GEMM): each block computes TILE x TILE elements of C,
// staging TILE-wide slices of A and B in shared memory, and the gathers below read every
// operand element straight from the tensors.
//
//   pass             rows m        columns j     reduction k    A(m, k)          B(k, j)
//   forward          (n, oh, ow)   o             (c, ky, kx)    input patch      w[o, c, ky, kx]
//   backward data    (n, ih, iw)   c             (o, ky, kx)    spread dy        w[o, c, ky, kx]
//   backward weight  o             (c, ky, kx)   (n, oh, ow)    dy               input patch
//
// One thread sums each element of C, over k in increasing order: every run gives the same
// bits (no atomics anywhere in this file). The weight gradient's reduction runs over the
// whole batch, so it is cut into chunks of a length fixed by the shapes alone (blockIdx.z
// picks one); a second kernel adds the chunks' partial sums in chunk order.

struct ConvGeometry {
    int N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW;

    // Input pixel that filter tap (c, ky, kx) meets at output pixel (n, oh, ow); 0 in the padding.
    template <typename T>
    __device__ T input_patch(const T* x, long long pixel, long long tap) const
    {
        const long long OHW = (long long)OH * OW;
        const long long n = pixel / OHW;
        const int oh = (int)(pixel % OHW) / OW, ow = (int)(pixel % OW);
        const int KHW = KH * KW;
        const int c = (int)(tap / KHW), ky = (int)(tap % KHW) / KW, kx = (int)(tap % KW);
        const int ih = oh * SH - PH + ky, iw = ow * SW - PW + kx;
        if (ih < 0 || ih >= H || iw < 0 || iw >= W)
            return T(0);
        return x[((n * C + c) * H + ih) * W + iw];
    }
};

template <typename T, int TILE, typename GatherA, typename GatherB, typename Store>
__device__ void tiled_gemm(long long M, long long J, long long k_begin, long long k_end, GatherA a, GatherB b,
                           Store store)
{
    // Stored k-major; the extra column keeps a warp's column reads on distinct banks.
    __shared__ T As[TILE][TILE + 1];
    __shared__ T Bs[TILE][TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (long long j0 = (long long)blockIdx.y * TILE; j0 < J; j0 += (long long)gridDim.y * TILE) {
        for (long long m0 = (long long)blockIdx.x * TILE; m0 < M; m0 += (long long)gridDim.x * TILE) {
            T acc = T(0);
            for (long long k0 = k_begin; k0 < k_end; k0 += TILE) {
                // threadIdx.x runs along k when loading: consecutive k are neighbours in memory
                // for w, for dy and (through kx or ow) for the input patches.
                const long long k = k0 + tx;
                As[tx][ty] = (m0 + ty < M && k < k_end) ? a(m0 + ty, k) : T(0);
                Bs[tx][ty] = (j0 + ty < J && k < k_end) ? b(k, j0 + ty) : T(0);
                __syncthreads();
                for (int kk = 0; kk < TILE; ++kk)
                    acc += As[kk][tx] * Bs[kk][ty];
                __syncthreads();  // the next slice overwrites As and Bs
            }
            // threadIdx.x runs along m when storing: consecutive output pixels are neighbours.
            if (m0 + tx < M && j0 + ty < J)
                store(m0 + tx, j0 + ty, acc);
        }
    }
}

// y[n, o, oh, ow] = b[o] + sum over (c, ky, kx) of x[n, c, oh*SH - PH + ky, ow*SW - PW + kx] * w[o, c, ky, kx]
template <typename T, int TILE>
__global__ void conv2d_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                               T* __restrict__ y, int N, int C, int H, int W, int O, int KH, int KW,
                               int OH, int OW, int SH, int SW, int PH, int PW)
{
    const ConvGeometry g{N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW};
    const long long OHW = (long long)OH * OW;
    const long long taps = (long long)C * KH * KW;
    auto patch = [=](long long pixel, long long tap) { return g.input_patch(x, pixel, tap); };
    auto filter = [=](long long tap, long long o) { return w[o * taps + tap]; };
    auto store = [=](long long pixel, long long o, T acc) {
        y[((pixel / OHW) * O + o) * OHW + pixel % OHW] = acc + b[o];
    };
    tiled_gemm<T, TILE>(N * OHW, O, 0, taps, patch, filter, store);
}

// dx as the seeds derive it: the "full" convolution of the stride-1 gradient map with the
// filter turned 180 degrees. Forward used input row ih + PH (in padded coordinates) at output
// row oh through tap ky where ih + PH = oh*SH + ky. On the stride-1 grid that dy is spread
// onto, row t = oh*SH holds dy row oh and every other row is a zero. Correlating that grid,
// zero-padded by KH - 1, with rot180(w) gives
//     dx[ih] = sum over ky of spread[ih + PH - ky] * w[ky]
// so the spread index ih + PH - ky names a real dy row only when it is a multiple of SH in
// [0, OH*SH): those are read from dy, the inserted zeros are skipped, never stored. Rows no
// window reached (when (H + 2P - K) % S != 0) find no such index and get 0. Channel c takes
// channel c of every filter, summed over the O filters (seed 002): the reduction over o.
template <typename T, int TILE>
__global__ void conv2d_backward_data_full_rot180(const T* __restrict__ dy, const T* __restrict__ w,
                                                 T* __restrict__ dx, int N, int C, int H, int W, int O,
                                                 int KH, int KW, int OH, int OW, int SH, int SW, int PH, int PW)
{
    const long long HW = (long long)H * W;
    const int KHW = KH * KW;
    auto spread_dy = [=](long long pixel, long long tap) {
        const long long n = pixel / HW;
        const int ih = (int)(pixel % HW) / W, iw = (int)(pixel % W);
        const int o = (int)(tap / KHW), ky = (int)(tap % KHW) / KW, kx = (int)(tap % KW);
        const int th = ih + PH - ky, tw = iw + PW - kx;  // the spread (stride-1) grid's row and column
        if (th < 0 || tw < 0 || th % SH != 0 || tw % SW != 0)
            return T(0);
        const int oh = th / SH, ow = tw / SW;
        if (oh >= OH || ow >= OW)
            return T(0);
        return dy[((n * O + o) * OH + oh) * OW + ow];
    };
    auto filter = [=](long long tap, long long c) { return w[((tap / KHW) * C + c) * KHW + tap % KHW]; };
    auto store = [=](long long pixel, long long c, T acc) { dx[((pixel / HW) * C + c) * HW + pixel % HW] = acc; };
    tiled_gemm<T, TILE>(N * HW, C, 0, (long long)O * KHW, spread_dy, filter, store);
}

// dw[o, c, ky, kx] = sum over (n, oh, ow) of dy[n, o, oh, ow] * x[n, c, oh*SH - PH + ky, ow*SW - PW + kx]:
// the layer's input correlated with dy, summed over the batch and every position (weight sharing).
// Block z sums positions [z * chunk, (z + 1) * chunk) into partials[z] (O x C*KH*KW), so that a
// batch-long reduction still keeps many blocks busy; add_partial_sums finishes the sum.
template <typename T, int TILE>
__global__ void conv2d_backward_weight(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ partials,
                                       int N, int C, int H, int W, int O, int KH, int KW,
                                       int OH, int OW, int SH, int SW, int PH, int PW, long long chunk)
{
    const ConvGeometry g{N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW};
    const long long OHW = (long long)OH * OW;
    const long long taps = (long long)C * KH * KW;
    const long long k_begin = blockIdx.z * chunk, k_end = min(k_begin + chunk, N * OHW);
    T* partial = partials + (long long)blockIdx.z * O * taps;
    auto grad_out = [=](long long o, long long pixel) { return dy[((pixel / OHW) * O + o) * OHW + pixel % OHW]; };
    auto patch = [=](long long pixel, long long tap) { return g.input_patch(x, pixel, tap); };
    auto store = [=](long long o, long long tap, T acc) { partial[o * taps + tap] = acc; };
    tiled_gemm<T, TILE>(O, taps, k_begin, k_end, grad_out, patch, store);
}

// out[i] = partials[0][i] + partials[1][i] + ... in chunk order, one thread per element.
template <typename T>
__global__ void add_partial_sums(const T* __restrict__ partials, T* __restrict__ out, int chunks, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        T sum = partials[i];
        for (int z = 1; z < chunks; ++z)
            sum += partials[z * n + i];
        out[i] = sum;
    }
}

// db[o] = sum over (n, oh, ow) of dy[n, o, oh, ow]. One block per channel: thread t sums the
// elements t, t + BLOCK, ... in order, then a fixed tree adds the BLOCK partial sums.
template <typename T, int BLOCK>
__global__ void conv2d_backward_bias(const T* __restrict__ dy, T* __restrict__ db, int N, int O, int OH, int OW)
{
    __shared__ T partial[BLOCK];
    const int t = threadIdx.x;
    const long long OHW = (long long)OH * OW;
    for (int o = blockIdx.x; o < O; o += gridDim.x) {
        T sum = T(0);
        for (long long i = t; i < N * OHW; i += BLOCK)
            sum += dy[((i / OHW) * O + o) * OHW + i % OHW];
        partial[t] = sum;
        __syncthreads();
        for (int half = BLOCK / 2; half > 0; half /= 2) {
            if (t < half)
                partial[t] += partial[t + half];
            __syncthreads();
        }
        if (t == 0)
            db[o] = partial[0];
        __syncthreads();  // partial is reused for the next channel
    }
}
