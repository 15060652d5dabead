// Adaptive average pooling on NCHW arrays to a fixed (OH, OW), with PyTorch's windows:
// output row oh averages input rows [floor(oh*H/OH), ceil((oh+1)*H/OH)), and likewise for
// columns. Windows may differ in size and overlap (H = 5, OH = 3: rows 0-1, 1-3, 3-4).
// Forward runs one thread per output element; backward is a gather, one thread per input
// element summing over the windows that cover it in a fixed order: no atomics, and every
// run gives the same bits. All loops are grid-stride.

#include "common.cuh"

// divide's 64-bit case, out of line: it calls a division subroutine, and inlined at each of
// a kernel's call sites it made ptxas spill the kernel's live values (sm_50-72).
__device__ __noinline__ long long divide_wide(long long n, int d)
{
    return n / d;
}

// n / d for n >= 0 and d > 0: in 32 bits whenever n fits, as every quotient here does but
// for the largest arrays (an element index past 2^32, a product o*I of sides past 65536).
// A division by a runtime value costs a GPU about twenty instructions in 32 bits, several
// times that in 64, and each element needs a few: its (n*c, row, column) and its windows.
__device__ __forceinline__ long long divide(long long n, int d)
{
    return n <= 0xffffffffLL ? (long long)((unsigned)n / (unsigned)d) : divide_wide(n, d);
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

// The sizes of the windows of outputs o, o + 1, ... over an axis of I inputs (of O outputs),
// with no division per window: o*I = start*O + rest is kept by adding I = step*O + step_rest.
struct WindowSizes {
    int start;  // floor(o*I / O): window o's first input
    unsigned rest, O;
    int step;
    unsigned step_rest;

    __device__ WindowSizes(int o, int I, int O_)
        : start(window_start(o, I, O_)), rest((unsigned)((long long)o * I - (long long)start * O_)), O(O_),
          step(I / O_), step_rest(I % O_)
    {
    }

    // Window o's size, moving on to o + 1: end(o) = ceil((o+1)*I / O) = start(o+1) + (rest(o+1) > 0).
    __device__ int next()
    {
        const int first = start;
        start += step;
        rest += step_rest;
        if (rest >= O) {
            rest -= O;
            ++start;
        }
        return start + (rest != 0) - first;
    }
};

template <typename T>
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
adaptive_avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, int N, int C, int H, int W, int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    GRID_STRIDE_LOOP(i, total) {
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
__global__ void __launch_bounds__(ELEMENTWISE_BLOCK)
adaptive_avg_pool2d_backward_gather(const T* __restrict__ dy, T* __restrict__ dx, int N, int C, int H, int W,
                                    int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    GRID_STRIDE_LOOP(i, total) {
        const Position at(i, H, W);
        const long long nc = at.nc;
        const int ih = at.row, iw = at.col;
        const int oh_first = first_covering(ih, H, OH), oh_last = last_covering(ih, H, OH);
        const int ow_first = first_covering(iw, W, OW), ow_last = last_covering(iw, W, OW);
        const WindowSizes first_rows(oh_first, H, OH);
        WindowSizes cols(ow_first, W, OW);
        T sum = T(0);
        for (int ow = ow_first; ow <= ow_last; ++ow) {
            const int width = cols.next();
            WindowSizes rows = first_rows;
            T column = T(0);
            // Not unrolled: each window costs a call (the floating-point division's slow path),
            // and unrolled copies keep more values live across the calls than ptxas holds in
            // registers: it spilled them (sm_100, sm_120).
#pragma unroll 1
            for (int oh = oh_first; oh <= oh_last; ++oh)
                column += dy[(nc * OH + oh) * OW + ow] / T(rows.next());
            sum += column / T(width);
        }
        dx[i] = sum;
    }
}
