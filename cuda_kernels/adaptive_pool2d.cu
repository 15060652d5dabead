// Adaptive average pooling on NCHW arrays to a fixed (OH, OW), with PyTorch's windows:
// output row oh averages input rows [floor(oh*H/OH), ceil((oh+1)*H/OH)), and likewise for
// columns. Windows may differ in size and overlap (H = 5, OH = 3: rows 0-1, 1-3, 3-4).
// Forward runs one thread per output element; backward is a gather, one thread per input
// element summing over the windows that cover it in a fixed order: no atomics, and every
// run gives the same bits. No #include: the same text compiles with NVRTC, nvcc and the CPU
// emulator. All loops are grid-stride.

// n / d for n >= 0 and d > 0: in 32 bits whenever n fits, as every quotient here does but
// for the largest arrays (an element index past 2^32, a product o*I of sides past 65536).
// A division by a runtime value costs a GPU about twenty instructions in 32 bits, several
// times that in 64, and each element needs a few: its (n*c, row, column) and its windows.
__device__ __forceinline__ long long divide(long long n, int d)
{
    return n <= 0xffffffffLL ? (long long)((unsigned)n / (unsigned)d) : n / d;
}

// Flat index i = (nc*ROWS + row)*COLS + col, split.
struct Position {
    long long nc;
    int row, col;

    __device__ Position(long long i, int ROWS, int COLS)
    {
        const long long q = divide(i, COLS);
        nc = divide(q, ROWS);
        row = (int)(q - nc * ROWS);
        col = (int)(i - q * COLS);
    }
};

// The first and one-past-last input row of output row o (of O) over an axis of I rows.
__device__ __forceinline__ int window_start(int o, int I, int O)
{
    return (int)divide((long long)o * I, O);
}

__device__ __forceinline__ int window_end(int o, int I, int O)
{
    return (int)divide((long long)(o + 1) * I + O - 1, O);
}

// The output rows whose windows hold input row i: start(o) <= i holds for o up to
// ((i+1)*O - 1) / I, end(o) > i from o = i*O / I on. Both bounds are monotone in o, so the
// covering rows are one range.
__device__ __forceinline__ int first_covering(int i, int I, int O)
{
    return (int)divide((long long)i * O, I);
}

__device__ __forceinline__ int last_covering(int i, int I, int O)
{
    return min((int)divide((long long)(i + 1) * O - 1, I), O - 1);
}

template <typename T>
__global__ void __launch_bounds__(256) adaptive_avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                                                   int N, int C, int H, int W, int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const Position at(i, OH, OW);
        const long long nc = at.nc;
        const int oh = at.row, ow = at.col;
        const int h0 = window_start(oh, H, OH), h1 = window_end(oh, H, OH);
        const int w0 = window_start(ow, W, OW), w1 = window_end(ow, W, OW);
        T sum = T(0);
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw)
                sum += x[(nc * H + ih) * W + iw];
        y[i] = sum / T((h1 - h0) * (w1 - w0));
    }
}

// dx[n, c, ih, iw] is the sum, over the windows that cover (ih, iw), of dy divided by the
// window's size rows * cols: summed column of windows by column, dividing by rows inside and
// by cols once per column (the order also keeps ptxas from spilling the double instance).
template <typename T>
__global__ void __launch_bounds__(256) adaptive_avg_pool2d_backward_gather(const T* __restrict__ dy,
                                                                           T* __restrict__ dx, int N, int C,
                                                                           int H, int W, int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const Position at(i, H, W);
        const long long nc = at.nc;
        const int ih = at.row, iw = at.col;
        const int oh_first = first_covering(ih, H, OH), oh_last = last_covering(ih, H, OH);
        const int ow_first = first_covering(iw, W, OW), ow_last = last_covering(iw, W, OW);
        T sum = T(0);
        for (int ow = ow_first; ow <= ow_last; ++ow) {
            const int cols = window_end(ow, W, OW) - window_start(ow, W, OW);
            T column = T(0);
            for (int oh = oh_first; oh <= oh_last; ++oh)
                column += dy[(nc * OH + oh) * OW + ow] / T(window_end(oh, H, OH) - window_start(oh, H, OH));
            sum += column / T(cols);
        }
        dx[i] = sum;
    }
}
