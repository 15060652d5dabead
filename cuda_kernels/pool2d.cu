// Max and average pooling on NCHW arrays, with zero padding (PH, PW) and PyTorch's ceil mode.
// Max pooling keeps, for each window, the in-window index ky*KW + kx of its maximum (counted
// from the window's corner in the padded input) and routes the window's gradient to that
// position; average pooling splits the gradient evenly over the window's divisor (seeds
// 001-003). Both backwards are gathers, one thread per input element, summing over the
// windows that cover it in a fixed order: overlapping windows need no atomics, and every run
// gives the same bits. Forward runs one thread per output element; all loops are grid-stride
// (for_each_element), BLOCK threads a block (declared with at least 1 block per SM: with the
// thread count alone, ptxas capped the average-pooling gather's registers and spilled, as in
// conv2d.cu).

// Flat index i = (plane*ROWS + row)*COLS + col of an N*C x ROWS x COLS array, as its digits.
struct Position {
    long long plane;
    int row, col;

    // A 32-bit split: an integer division by a runtime value costs a GPU about twenty
    // instructions in 32 bits, several times that in 64.
    __device__ Position(unsigned i, unsigned ROWS, unsigned COLS)
        : plane(i / COLS / ROWS), row((int)(i / COLS % ROWS)), col((int)(i % COLS))
    {
    }

    // Adds step's digits (each below its radix: step.row < ROWS, step.col < COLS) with one
    // conditional carry per digit, each test written against what is left below the radix:
    // col + step.col may pass 2^31.
    __device__ void advance(const Position& step, int ROWS, int COLS)
    {
        const bool col_carry = col >= COLS - step.col;
        col += col_carry ? step.col - COLS : step.col;
        const int rows = step.row + col_carry;  // at most ROWS
        const bool row_carry = row >= ROWS - rows;
        row += row_carry ? rows - ROWS : rows;
        plane += step.plane + row_carry;
    }
};

// body(i, plane, row, col) for every element i = (plane*ROWS + row)*COLS + col of an array of
// `planes` ROWS x COLS planes, grid-stride. A thread splits its first i into digits once and
// steps them by the grid's width: no division per element. The first i and the width are
// below 2^32 (launch.py keeps gridDim.x * BLOCK there), so even that split is 32-bit; i
// itself, and every offset, is 64-bit.
template <typename Body>
__device__ void for_each_element(long long planes, int ROWS, int COLS, const Body& body)
{
    const unsigned first = blockIdx.x * blockDim.x + threadIdx.x, width = gridDim.x * blockDim.x;
    const Position step(width, ROWS, COLS);
    Position at(first, ROWS, COLS);
    for (long long i = first; at.plane < planes; i += width, at.advance(step, ROWS, COLS))
        body(i, at.plane, at.row, at.col);
}

template <typename T>
__device__ bool is_nan(T v)
{
    return v != v;  // only NaN differs from itself
}

// Window `index` along one axis: it starts at start = index*S - P of x (negative in the
// leading padding) and spans K rows, of which [begin, end) lie inside x and [start,
// padded_end) inside x and its padding (a ceil-mode window may reach past the far padding).
// The layer's checks (padding at most half the window; in ceil mode, no window starting
// past the input and its leading padding) leave every window at least one row of x: no
// window reads only padding.
struct Span {
    int start, begin, end, padded_end;

    __device__ Span(int index, int K, int S, int P, int size)
        : start(index * S - P), begin(max(start, 0)), end(min(start + K, size)), padded_end(min(start + K, size + P))
    {
    }
};

// The windows covering input row i: window o covers padded rows [o*S, o*S + K), so those
// with i + P - K < o*S <= i + P, and below `out`; likewise for columns.
struct Covering {
    int first, last;

    __device__ Covering(int i, int K, int S, int P, int out)
        : first(i + P < K ? 0 : (i + P - K) / S + 1), last(min((i + P) / S, out - 1))
    {
    }
};

struct PoolGeometry {
    int N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW;

    __device__ Span rows(int oh) const { return Span(oh, KH, SH, PH, H); }
    __device__ Span cols(int ow) const { return Span(ow, KW, SW, PW, W); }
    __device__ Covering covering_rows(int ih) const { return Covering(ih, KH, SH, PH, OH); }
    __device__ Covering covering_cols(int iw) const { return Covering(iw, KW, SW, PW, OW); }

    // What average pooling divides window (oh, ow)'s sum by, as PyTorch: with
    // count_include_pad, its positions in x and the padding; without, those in x only.
    template <typename T>
    __device__ T avg_divisor(const Span& r, const Span& c, int count_include_pad) const
    {
        if (count_include_pad)
            return T((long long)(r.padded_end - r.start) * (c.padded_end - c.start));
        return T((long long)(r.end - r.begin) * (c.end - c.begin));
    }
};

// y[n, c, oh, ow] = the window's maximum, PyTorch's rule (CPU and CUDA alike): scanning the
// window's positions inside x in order, a value replaces the running maximum when greater
// or NaN. So the first maximum wins a tie (-0.0 before 0.0 stays -0.0), and the last NaN
// wins a window holding several; padding never wins.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK, 1)
max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax, int N, int C, int H,
                   int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
    const PoolGeometry g{N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW};
    for_each_element((long long)N * C, OH, OW, [&](long long i, long long nc, int oh, int ow) {
        const long long plane = nc * H * W;
        const Span r = g.rows(oh), c = g.cols(ow);
        T best = x[plane + (long long)r.begin * W + c.begin];
        int best_at = (r.begin - r.start) * KW + (c.begin - c.start);
        for (int ih = r.begin; ih < r.end; ++ih) {
            for (int iw = c.begin; iw < c.end; ++iw) {
                const T v = x[plane + (long long)ih * W + iw];
                if (v > best || is_nan(v)) {
                    best = v;
                    best_at = (ih - r.start) * KW + (iw - c.start);
                }
            }
        }
        y[i] = best;
        argmax[i] = best_at;
    });
}

// dx[n, c, ih, iw] sums dy over the covering windows whose argmax chose (ih, iw).
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK, 1)
max_pool2d_backward_gather(const T* __restrict__ dy, const int* __restrict__ argmax, T* __restrict__ dx, int N,
                           int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
    const PoolGeometry g{N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW};
    for_each_element((long long)N * C, H, W, [&](long long i, long long nc, int ih, int iw) {
        const Covering rows = g.covering_rows(ih), cols = g.covering_cols(iw);
        T sum = T(0);
        for (int oh = rows.first; oh <= rows.last; ++oh) {
            for (int ow = cols.first; ow <= cols.last; ++ow) {
                const long long at = (nc * OH + oh) * OW + ow;
                if (argmax[at] == (ih + PH - oh * SH) * KW + (iw + PW - ow * SW))
                    sum += dy[at];
            }
        }
        dx[i] = sum;
    });
}

// y[n, c, oh, ow] = the sum of the window's values inside x (padding adds zeros), in row
// order, divided by the window's divisor.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK, 1)
avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, int N, int C, int H, int W, int KH, int KW, int SH,
                   int SW, int PH, int PW, int OH, int OW, int count_include_pad)
{
    const PoolGeometry g{N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW};
    for_each_element((long long)N * C, OH, OW, [&](long long i, long long nc, int oh, int ow) {
        const long long plane = nc * H * W;
        const Span r = g.rows(oh), c = g.cols(ow);
        T sum = T(0);
        for (int ih = r.begin; ih < r.end; ++ih)
            for (int iw = c.begin; iw < c.end; ++iw)
                sum += x[plane + (long long)ih * W + iw];
        y[i] = sum / g.avg_divisor<T>(r, c, count_include_pad);
    });
}

// dx[n, c, ih, iw] is the sum, over the covering windows, of dy divided by the window's divisor.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK, 1)
avg_pool2d_backward_gather(const T* __restrict__ dy, T* __restrict__ dx, int N, int C, int H, int W, int KH, int KW,
                           int SH, int SW, int PH, int PW, int OH, int OW, int count_include_pad)
{
    const PoolGeometry g{N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW};
    for_each_element((long long)N * C, H, W, [&](long long i, long long nc, int ih, int iw) {
        const Covering rows = g.covering_rows(ih), cols = g.covering_cols(iw);
        T sum = T(0);
        for (int oh = rows.first; oh <= rows.last; ++oh)
            for (int ow = cols.first; ow <= cols.last; ++ow)
                sum += dy[(nc * OH + oh) * OW + ow] / g.avg_divisor<T>(g.rows(oh), g.cols(ow), count_include_pad);
        dx[i] = sum;
    });
}
