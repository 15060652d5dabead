// Convolution on NCHW arrays with filters w of shape (O, C/G, KH, KW), dilation (DH, DW) and
// G groups: forward, backward-data (the seeds' "full" convolution with the filter turned 180
// degrees), weight and bias gradients. The same text compiles with NVRTC, nvcc and the CPU
// emulator; its one #include, <mma.h> (the tensor cores' nvcuda::wmma, for the TF32 path),
// is CUDA's header there and the emulator's own gpucnn/emulator/mma.h here.
//
// Forward, backward-data and weight gradient are each one matrix product C = A B whose
// operands are never stored (implicit GEMM): each block computes a BM x BN tile of C, each
// of its threads a TM x TN patch of that tile in registers, and the operands below gather
// every element of A and B straight from the tensors.
//
//   pass             rows m        columns j     reduction k    A(m, k)          B(k, j)
//   forward          (n, oh, ow)   o             (c, ky, kx)    input patch      w[o, c, ky, kx]
//   backward data    (n, ih, iw)   c             (o, ky, kx)    dy               w[o, c, ky, kx]
//                    of one stride phase         of its taps
//   backward weight  o             (c, ky, kx)   (n, oh, ow)    dy               input patch
//
// With groups, each is G independent products, one per group (blockIdx.z), where o and c run
// over the group's O/G output and C/G input channels only: the kernel moves its pointers to
// the group's first channel and keeps the whole tensors' sizes for the batch strides.
// One thread sums each element of C, over k in increasing order: every run gives the same
// bits (no atomics anywhere in this file). The weight gradient's reduction runs over the
// whole batch, so it is cut into chunks of a length fixed by the shapes alone (blockIdx.z
// picks one); a second kernel adds the chunks' partial sums in chunk order.

#include <mma.h>

// Every multiply-add is an explicit fused one, rounded once: the compiler may not choose
// (NVRTC runs with --fmad=false and the emulator with -ffp-contract=off), so a GPU and the
// emulator give the same bits. One name for both precisions: fmaf and fma.
__device__ __forceinline__ float fused_multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fused_multiply_add(double a, double b, double c) { return fma(a, b, c); }

// k as three digits (hi, mid, lo) with lo < LO and mid < MID: (c, ky, kx) over (KH, KW) for
// taps, (n, oh, ow) over (OH, OW) for output pixels. The gathers need the digits of every
// k they read, and an integer division by a runtime value costs a GPU about twenty
// instructions, so a thread divides once per tile (split) and then steps its digits by the
// depth of a k slice, once per slice (advance): the step's own digits are below the
// radices, so a single conditional carry per digit is enough.
struct Digits {
    int hi, mid, lo;
};

struct MixedRadix {
    int MID, LO;

    __device__ Digits split(long long k) const
    {
        const long long high = k / LO;
        return {(int)(high / MID), (int)(high % MID), (int)(k % LO)};
    }

    __device__ void advance(Digits& d, const Digits& step) const
    {
        d.lo += step.lo;
        d.mid += step.mid;
        d.hi += step.hi;
        if (d.lo >= LO) {
            d.lo -= LO;
            ++d.mid;
        }
        if (d.mid >= MID) {
            d.mid -= MID;
            ++d.hi;
        }
    }
};

// An input patch element is x[n, c, oh*SH - PH + ky*DH, ow*SW - PW + kx*DW]: a sum of an output
// pixel's part (its window) and a filter tap's part. A thread keeps one side fixed for the
// whole k loop (the pixel in forward, the tap in the weight gradient) and computes it once.
struct Window {  // where output pixel (n, oh, ow) puts the filter's corner in x
    long long base;  // offset of x[n, 0, top, left]
    int top, left;
};

struct Tap {  // filter tap (c, ky, kx) relative to that corner
    long long offset;  // c*H*W + ky*DH*W + kx*DW
    int ky, kx;        // its row and column in x relative to the corner: ky*DH, kx*DW
};

// C and O count every channel of the tensors (their batch strides); a group has C/G and O/G.
struct ConvGeometry {
    int N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G;

    __device__ int group_inputs() const { return C / G; }
    __device__ int group_outputs() const { return O / G; }

    __device__ Window window(int n, int oh, int ow) const
    {
        const int top = oh * SH - PH, left = ow * SW - PW;
        return {((long long)n * C * H + top) * W + left, top, left};
    }

    __device__ Tap tap(int c, int ky, int kx) const
    {
        return {((long long)c * H + ky * DH) * W + kx * DW, ky * DH, kx * DW};
    }

    // 0 where the tap falls in the padding.
    template <typename T>
    __device__ T patch(const T* x, const Window& win, const Tap& tap) const
    {
        // One unsigned comparison tests both 0 <= ih and ih < H.
        if ((unsigned)(win.top + tap.ky) >= (unsigned)H || (unsigned)(win.left + tap.kx) >= (unsigned)W)
            return T(0);
        return x[win.base + tap.offset];
    }

    __device__ MixedRadix taps() const { return {KH, KW}; }
    __device__ MixedRadix pixels() const { return {OH, OW}; }
};

// The operands. Each says how threads gather it (K_FAST: consecutive threads take
// consecutive k, for operands contiguous along k; otherwise consecutive rows), the digits
// of its k (radix), the part of an element's address that depends on the row alone (Outer,
// computed once per tile) and on k alone (Inner, once per slice), and the element (at).

// A(pixel, tap) of the forward pass: rows are output pixels, which (at stride 1) are
// neighbours in x, so threads gather along the rows.
template <typename T>
struct PatchByPixel {
    static constexpr bool K_FAST = false;
    using Outer = Window;
    using Inner = Tap;
    const T* x;
    ConvGeometry g;

    __device__ MixedRadix radix() const { return g.taps(); }
    __device__ Window outer(long long pixel) const
    {
        const Digits p = g.pixels().split(pixel);
        return g.window(p.hi, p.mid, p.lo);
    }
    __device__ Tap inner(const Digits& k) const { return g.tap(k.hi, k.mid, k.lo); }
    __device__ T at(const Window& win, const Tap& tap) const { return g.patch(x, win, tap); }
};

// B(pixel, tap) of the weight gradient: the same patch with the roles swapped, k running
// over output pixels (neighbours in x) and the columns over taps.
template <typename T>
struct PatchByTap {
    static constexpr bool K_FAST = true;
    using Outer = Tap;
    using Inner = Window;
    const T* x;
    ConvGeometry g;

    __device__ MixedRadix radix() const { return g.pixels(); }
    __device__ Tap outer(long long tap) const
    {
        const Digits t = g.taps().split(tap);
        return g.tap(t.hi, t.mid, t.lo);
    }
    __device__ Window inner(const Digits& k) const { return g.window(k.hi, k.mid, k.lo); }
    __device__ T at(const Tap& tap, const Window& win) const { return g.patch(x, win, tap); }
};

// p[outer*OUTER + hi*HI + mid*LO + lo], no bounds to test: the filters (k over taps or over
// (o, ky, kx)) and dy in the weight gradient (k over output pixels), all contiguous along k.
template <typename T>
struct Strided {
    static constexpr bool K_FAST = true;
    using Outer = long long;
    using Inner = long long;
    const T* p;
    long long OUTER, HI;
    MixedRadix digits;

    __device__ MixedRadix radix() const { return digits; }
    __device__ long long outer(long long index) const { return index * OUTER; }
    __device__ long long inner(const Digits& k) const { return k.hi * HI + (long long)k.mid * digits.LO + k.lo; }
    __device__ T at(long long outer, long long inner) const { return p[outer + inner]; }
};

// Backward-data along one axis (rows here; columns alike), split into stride phases. Forward
// read input row ih at output row oh through tap ky where ih + PH = oh*SH + ky*DH, so the
// taps that reach ih are those with ky*DH = r (mod SH), r = (ih + PH) mod SH. With
// d = gcd(DH, SH) there are none unless d divides r; else they are ky = t, t + SH/d, ...,
// t the least of them (SH/d apart: the least step that keeps ky*DH mod SH). Phase r holds
// the input rows of that residue, first, first + SH, ..., and its row first + i*SH meets dy
// row q + i - j*DH/d through tap t + j*SH/d, where q = (first + PH - t*DH) / SH (an exact
// division). Without dilation, t = r and the steps are SH and 1.
// launch.stride_phase computes these on the host, and the kernel takes them as parameters:
// derived in the kernel, each would take a register for the whole k loop.
struct StridePhase {
    int first, pixels;    // its input rows: first, first + S, ... (pixels of them)
    int tap, taps;        // its taps: tap, tap + tap_step, ... below K (taps of them)
    int tap_step, q;      // q: the dy row that row first meets through tap `tap`
    int dy_step;          // how far back the dy row moves per tap step: DH/d
};

// A(phase pixel, (o, j, jx)) of backward-data: dy[n, o, q_h + i - j*dy_step_h, q_w + i2 -
// jx*dy_step_w] for the phase's pixel (n, i, i2) and tap (tap_h + j*tap_step_h, tap_w +
// jx*tap_step_w), 0 past dy's edges. Every k read is a real dy position or an edge: no
// inserted zero. Rows are the phase's pixels, neighbours in dy: threads gather along rows.
template <typename T>
struct PhaseDy {
    static constexpr bool K_FAST = false;
    struct Outer {
        long long image;  // offset of dy[n, 0, 0, 0]
        int oh, ow;       // the dy position the pixel meets through the phase's first tap
    };
    struct Inner {
        long long channel;  // o*OH*OW
        int j, jx;          // how far back the tap moves the dy position: j*dy_step_h, jx*dy_step_w
    };
    const T* dy;
    ConvGeometry g;
    StridePhase ph, pw;

    __device__ MixedRadix radix() const { return {ph.taps, pw.taps}; }
    __device__ Outer outer(long long pixel) const
    {
        const long long plane = (long long)ph.pixels * pw.pixels;
        const long long p = pixel % plane;  // a plane may pass 2^31 pixels; its rows and columns do not
        return {pixel / plane * g.O * g.OH * g.OW, ph.q + (int)(p / pw.pixels), pw.q + (int)(p % pw.pixels)};
    }
    __device__ Inner inner(const Digits& k) const
    {
        return {(long long)k.hi * g.OH * g.OW, k.mid * ph.dy_step, k.lo * pw.dy_step};
    }
    __device__ T at(const Outer& r, const Inner& k) const
    {
        const int oh = r.oh - k.j, ow = r.ow - k.jx;
        // One unsigned comparison tests both 0 <= oh and oh < OH.
        if ((unsigned)oh >= (unsigned)g.OH || (unsigned)ow >= (unsigned)g.OW)
            return T(0);
        return dy[r.image + k.channel + (long long)oh * g.OW + ow];
    }
};

// B((o, j, jx), c) of backward-data: w[o, c, tap_h + j*tap_step_h, tap_w + jx*tap_step_w], the
// phase's taps only; o and c within the group.
template <typename T>
struct PhaseFilter {
    static constexpr bool K_FAST = true;
    using Outer = long long;
    using Inner = long long;
    const T* w;
    ConvGeometry g;
    StridePhase ph, pw;

    __device__ MixedRadix radix() const { return {ph.taps, pw.taps}; }
    __device__ long long outer(long long c) const { return (c * g.KH + ph.tap) * g.KW + pw.tap; }
    __device__ long long inner(const Digits& k) const
    {
        return (long long)k.hi * g.group_inputs() * g.KH * g.KW + k.mid * ph.tap_step * g.KW + k.lo * pw.tap_step;
    }
    __device__ T at(long long outer, long long inner) const { return w[outer + inner]; }
};

// The stores: where element (m, j) of C goes, out[row(m) + ...j...]. ALONG_ROWS says which
// of C's axes is contiguous in memory, and so which way a warp stores (StagedTile): along
// the rows m (consecutive output pixels of one channel) or along the columns j.

// dx[n, c, first_h + i*SH, first_w + i2*SW] for row m = (n, i, i2) of a phase's product:
// consecutive rows are a phase's neighbouring pixels of one channel, neighbours in dx at
// stride 1.
template <typename T>
struct StorePhaseRows {
    static constexpr bool ALONG_ROWS = true;
    T* dx;
    ConvGeometry g;
    StridePhase ph, pw;

    __device__ long long row(long long m) const  // the offset of dx[n, 0, first_h + i*SH, first_w + i2*SW]
    {
        const long long plane = (long long)ph.pixels * pw.pixels;
        const long long p = m % plane;
        const int i = (int)(p / pw.pixels), i2 = (int)(p % pw.pixels);
        return ((m / plane) * g.C * g.H + ph.first + i * g.SH) * g.W + pw.first + i2 * g.SW;
    }
    __device__ void put(long long row, long long c, T v) const { dx[row + c * g.H * g.W] = v; }
};

// out[(n*J + j)*PLANE + p] for row m = n*PLANE + p, plus bias[j] when there is a bias: an NCHW
// tensor of J channels with the channels as columns (forward's y; a group's columns are some
// of its J channels), consecutive rows its neighbouring pixels of one channel.
template <typename T>
struct StoreRows {
    static constexpr bool ALONG_ROWS = true;
    T* out;
    const T* bias;  // or nullptr
    long long PLANE, J;

    __device__ long long row(long long m) const  // the offset of element (m, 0)
    {
        const long long p = m % PLANE;
        return (m - p) * J + p;
    }
    __device__ void put(long long row, long long j, T c) const { out[row + j * PLANE] = bias ? c + bias[j] : c; }
};

// out[m*J + j]: a row-major matrix (the weight gradient's partial sums, rows o, columns
// (c, ky, kx)), contiguous along its columns.
template <typename T>
struct StoreMatrix {
    static constexpr bool ALONG_ROWS = false;
    T* out;
    long long J;

    __device__ long long row(long long m) const { return m * J; }
    __device__ void put(long long row, long long j, T c) const { out[row + j] = c; }
};

// Padding after each k row of a shared tile (tiles are stored k-major). It keeps every row
// 16-byte aligned, for the products' wide reads, and sends a k-fast gather's warp (BK
// values of k by 32/BK rows) to distinct banks: in float32, row kk starts at bank kk*32/BK
// when rows are a multiple of 32 elements long (and on distinct banks too for the other
// row lengths of launch.GEMM_TILES: 16 and 4 with BK = 4).
__host__ __device__ constexpr int shared_pad(int BK) { return 32 / BK; }

// Which elements of an operand's ROWS x BK slice one thread gathers, and the gather itself.
// The thread reads one k per slice and the rows first_row, first_row + LANES, ...; both
// stay fixed across slices, so the rows' Outer parts are computed once per tile and the
// k's digits are stepped, never divided (MixedRadix). Values are gathered into
// registers (load) a slice ahead and written to shared memory (put) after the current
// slice's products, so the global reads' latency hides behind those products.
template <typename T, int ROWS, int BK, int THREADS, typename Operand>
struct SliceLoader {
    static constexpr int LANES = THREADS / BK;               // threads per k
    static constexpr int COUNT = (ROWS + LANES - 1) / LANES;  // rows per thread
    static_assert(THREADS % BK == 0, "every thread takes one k of each slice");

    const Operand& op;
    MixedRadix radix;
    Digits step, digits;
    int kk, first_row;
    typename Operand::Outer rows[COUNT];
    T next[COUNT];

    __device__ SliceLoader(const Operand& op, long long row0, long long row_count, long long k_begin)
        : op(op), radix(op.radix())
    {
        const int t = threadIdx.x;
        kk = Operand::K_FAST ? t % BK : t / LANES;
        first_row = Operand::K_FAST ? t / BK : t % LANES;
        step = radix.split(BK);
        digits = radix.split(k_begin + kk);
        // Rows past the matrix's edge read the last row instead: they only feed elements of
        // C outside the matrix, which are never stored, and no row needs a bounds test.
        for (int i = 0; i < COUNT; ++i)
            rows[i] = op.outer(min(row0 + first_row + i * LANES, row_count - 1));
    }

    // depth: how many k of this slice are left before k_end; those past it add nothing.
    __device__ void load(int depth)
    {
        const typename Operand::Inner inner = op.inner(digits);
        for (int i = 0; i < COUNT; ++i)
            next[i] = kk < depth ? op.at(rows[i], inner) : T(0);
    }

    __device__ void advance() { radix.advance(digits, step); }

    // Stored k-major: a thread's products then read TM (or TN) neighbours of one k at once.
    __device__ void put(T (*slice)[ROWS + shared_pad(BK)]) const
    {
        for (int i = 0; i < COUNT; ++i)
            if (first_row + i * LANES < ROWS)
                slice[kk][first_row + i * LANES] = next[i];
    }
};

// acc += the products of one k slice: per k, TM values of A and TN of B (neighbours in
// shared memory, read as wide loads) make TM*TN multiply-adds.
template <typename T, int BM, int BN, int BK, int TM, int TN>
__device__ void multiply_slice(const T (*As)[BM + shared_pad(BK)], const T (*Bs)[BN + shared_pad(BK)], int tm, int tn,
                               T (&acc)[TM][TN])
{
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        T a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
            a[i] = As[kk][tm * TM + i];
#pragma unroll
        for (int j = 0; j < TN; ++j)
            b[j] = Bs[kk][tn * TN + j];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j)
                acc[i][j] = fused_multiply_add(a[i], b[j], acc[i][j]);
    }
}

// The k loop of one BM x BN tile, for either GEMM: slices of A and B are gathered a slice
// ahead (SliceLoader) and alternate between two shared buffers, As[0|1] and Bs[0|1], so one
// barrier per slice suffices: the buffer being filled was last read before the previous
// barrier. multiply(As[b], Bs[b]) runs the products of a staged slice.
template <typename T, int BM, int BN, int BK, int THREADS, typename OperandA, typename OperandB, typename Multiply>
__device__ void for_each_slice(long long m0, long long M, long long j0, long long J, long long k_begin,
                               long long k_end, const OperandA& a, const OperandB& b,
                               T (*As)[BK][BM + shared_pad(BK)], T (*Bs)[BK][BN + shared_pad(BK)],
                               const Multiply& multiply)
{
    SliceLoader<T, BM, BK, THREADS, OperandA> load_a(a, m0, M, k_begin);
    SliceLoader<T, BN, BK, THREADS, OperandB> load_b(b, j0, J, k_begin);
    load_a.load((int)min(k_end - k_begin, (long long)BK));
    load_b.load((int)min(k_end - k_begin, (long long)BK));
    load_a.put(As[0]);
    load_b.put(Bs[0]);
    __syncthreads();
    int buffer = 0;
    for (long long k0 = k_begin; k0 < k_end; k0 += BK) {
        const bool more = k0 + BK < k_end;
        if (more) {  // in flight while the products below run
            const int depth = (int)min(k_end - k0 - BK, (long long)BK);
            load_a.advance();
            load_b.advance();
            load_a.load(depth);
            load_b.load(depth);
        }
        multiply(As[buffer], Bs[buffer]);
        if (more) {
            load_a.put(As[buffer ^ 1]);
            load_b.put(Bs[buffer ^ 1]);
        }
        __syncthreads();
        buffer ^= 1;
    }
}

// The BM x BN tile of C on its way out, staged in shared memory so that a warp's global
// stores are neighbours whatever pattern the threads computed it in: for a store along the
// rows (Store::ALONG_ROWS) the tile is held column-major and consecutive threads take
// consecutive rows of one column (32 neighbouring output pixels of one channel, one
// 128-byte line in float32); otherwise row-major, consecutive threads along a row. Rows
// are padded by 4 elements, as the TF32 path always padded them: wmma's ldm stays a
// multiple of 16 bytes, and neighbouring rows start on different banks.
template <typename T, int BM, int BN, bool ALONG_ROWS>
struct StagedTile {
    static constexpr int INNER = ALONG_ROWS ? BM : BN, OUTER = ALONG_ROWS ? BN : BM;
    static constexpr int LD = INNER + 4, SIZE = OUTER * LD;
    T* cs;

    __device__ T& at(int r, int c) const { return ALONG_ROWS ? cs[c * LD + r] : cs[r * LD + c]; }

    // Writes the staged tile, rows m0.. and columns j0.. of C, through store; every thread
    // of the block calls it once the tile is staged. A thread keeps one position along the
    // contiguous axis (so its row's offset, a 64-bit division in StoreRows, is found once)
    // and steps along the other. The barriers: before, the tile is complete; after, every
    // read of it is done before the block's next tile overwrites the same shared memory.
    // The loops stay rolled: unrolled, ptxas hoisted their addresses and took up to 18 more
    // registers (sm_90) than the k loop needs.
    template <int THREADS, typename Store>
    __device__ void write_out(const Store& store, long long m0, long long M, long long j0, long long J) const
    {
        static_assert(THREADS % INNER == 0, "each thread keeps one position along the contiguous axis");
        const int inner = threadIdx.x % INNER;
        __syncthreads();
        if (ALONG_ROWS && m0 + inner < M) {
            const long long row = store.row(m0 + inner);
#pragma unroll 1
            for (int c = threadIdx.x / INNER; c < BN && j0 + c < J; c += THREADS / INNER)
                store.put(row, j0 + c, at(inner, c));
        }
        if (!ALONG_ROWS && j0 + inner < J) {
#pragma unroll 1
            for (int r = threadIdx.x / INNER; r < BM && m0 + r < M; r += THREADS / INNER)
                store.put(store.row(m0 + r), j0 + inner, at(r, inner));
        }
        __syncthreads();
    }
};

// A GEMM block's shared memory, one array: during the k loop the two buffers of A slices
// and of B slices (for_each_slice, k-major), after it the staged tile (StagedTile), so that
// staging costs no shared memory beyond the larger of the two (a float64 64 x 64 tile
// staged apart from its slices would pass the 48 KiB of static shared memory). The k
// loop's last barrier orders its reads of the slices before the tile's writes.
template <typename T, int BM, int BN, int BK, bool ALONG_ROWS>
struct GemmShared {
    static constexpr int LDA = BM + shared_pad(BK), LDB = BN + shared_pad(BK);
    using Tile = StagedTile<T, BM, BN, ALONG_ROWS>;
    static constexpr int SLICES = 2 * BK * (LDA + LDB);
    static constexpr int SIZE = SLICES > Tile::SIZE ? SLICES : Tile::SIZE;
    static_assert(2 * BK * LDA * sizeof(T) % 32 == 0, "B's slices start 32-byte aligned, as A's");
    T* p;

    __device__ auto as() const { return reinterpret_cast<T (*)[BK][LDA]>(p); }
    __device__ auto bs() const { return reinterpret_cast<T (*)[BK][LDB]>(p + 2 * BK * LDA); }
    __device__ Tile tile() const { return {p}; }
};

// C (M x J) = A B over k in [k_begin, k_end), written through store (StoreRows,
// StorePhaseRows or StoreMatrix). blockIdx.x walks BM-row tiles and blockIdx.y BN-column
// tiles, both grid-stride; a block has (BM/TM) x (BN/TN) threads, thread (tm, tn) owning rows
// tm*TM.. and columns tn*TN.. of the tile in registers, which it stages (StagedTile) for
// the block to store.
template <typename T, int BM, int BN, int BK, int TM, int TN, typename OperandA, typename OperandB, typename Store>
__device__ void tiled_gemm(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                           const OperandB& b, const Store& store)
{
    constexpr int THREADS = (BM / TM) * (BN / TN);
    using Shared = GemmShared<T, BM, BN, BK, Store::ALONG_ROWS>;
    __align__(32) __shared__ T shared[Shared::SIZE];
    const Shared smem{shared};
    const int tm = threadIdx.x % (BM / TM), tn = threadIdx.x / (BM / TM);
    for (long long j0 = (long long)blockIdx.y * BN; j0 < J; j0 += (long long)gridDim.y * BN) {
        for (long long m0 = (long long)blockIdx.x * BM; m0 < M; m0 += (long long)gridDim.x * BM) {
            T acc[TM][TN] = {};
            for_each_slice<T, BM, BN, BK, THREADS>(
                m0, M, j0, J, k_begin, k_end, a, b, smem.as(), smem.bs(),
                [&](const T (*as)[BM + shared_pad(BK)], const T (*bs)[BN + shared_pad(BK)]) {
                    multiply_slice<T, BM, BN, BK, TM, TN>(as, bs, tm, tn, acc);
                });
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < TN; ++j)
                    smem.tile().at(tm * TM + i, tn * TN + j) = acc[i][j];
            smem.tile().template write_out<THREADS>(store, m0, M, j0, J);
        }
    }
}

// The TF32 path (gpucnn.set_float32_matmul_precision("high")): C = A B on tensor cores.
// Operands are gathered exactly as tiled_gemm gathers them (SliceLoader, a slice ahead, two
// shared buffers, one barrier per slice), k 8 at a time: one m16n16k8 step. Each warp owns a
// WM x WN patch of the BM x BN tile, (WM/16) x (WN/16) accumulator fragments. A fragment's
// operands are rounded to TF32 (cvt.rna: to nearest, ties away from zero) after loading;
// products are exact and sums float32. The fragments are staged (StagedTile, in the slices'
// shared memory, as tiled_gemm's registers are) and stored as tiled_gemm stores.
// Shared k-major slices are exactly wmma's layouts: A (m, k) at As[k][m] is column-major
// with ldm BM + pad, B (k, j) at Bs[k][j] row-major with ldm BN + pad; every fragment
// pointer is 32-byte aligned because each such row is a multiple of 32 bytes long (static
// asserts below).
// Before sm_80 there are no TF32 tensor cores (and CUDA's <mma.h> declares no TF32 fragment):
// the TF32 kernels compile to a trap there, which the launcher never picks.
constexpr int TF32_K = 8;

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
// A fragment of A or B loaded, each element rounded to TF32 (the tensor core would only drop
// the low bits: round to nearest is half the error).
template <typename Fragment>
__device__ void load_tf32(Fragment& f, const float* p, unsigned ldm)
{
    nvcuda::wmma::load_matrix_sync(f, p, ldm);
#pragma unroll
    for (int e = 0; e < f.num_elements; ++e)
        f.x[e] = nvcuda::wmma::__float_to_tf32(f.x[e]);
}

template <int BM, int BN, int WM, int WN, typename Accumulators>
__device__ void multiply_slice_tf32(const float (*As)[BM + shared_pad(TF32_K)],
                                    const float (*Bs)[BN + shared_pad(TF32_K)], int wm, int wn, Accumulators& acc)
{
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> a[WM / 16];
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b[WN / 16];
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
        load_tf32(a[i], &As[0][wm * WM + i * 16], BM + shared_pad(TF32_K));
#pragma unroll
    for (int j = 0; j < WN / 16; ++j)
        load_tf32(b[j], &Bs[0][wn * WN + j * 16], BN + shared_pad(TF32_K));
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int j = 0; j < WN / 16; ++j)
            wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
}
#endif

template <int BM, int BN, int WM, int WN, typename OperandA, typename OperandB, typename Store>
__device__ void tiled_gemm_tf32(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                                const OperandB& b, const Store& store)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();
#else
    using namespace nvcuda;
    constexpr int BK = TF32_K, THREADS = (BM / WM) * (BN / WN) * 32;
    using Shared = GemmShared<float, BM, BN, BK, Store::ALONG_ROWS>;
    constexpr int LDA = Shared::LDA, LDB = Shared::LDB, LDC = Shared::Tile::LD;
    static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0, "whole fragments per warp");
    static_assert(LDA % 4 == 0 && LDB % 4 == 0 && LDC % 4 == 0 && BK * LDA % 8 == 0 && BK * LDB % 8 == 0,
                  "ldm a multiple of 16 bytes, fragment pointers (16 elements apart in a row) 32-byte aligned");
    __align__(32) __shared__ float shared[Shared::SIZE];
    const Shared smem{shared};
    const int warp = threadIdx.x / 32, wm = warp % (BM / WM), wn = warp / (BM / WM);
    for (long long j0 = (long long)blockIdx.y * BN; j0 < J; j0 += (long long)gridDim.y * BN) {
        for (long long m0 = (long long)blockIdx.x * BM; m0 < M; m0 += (long long)gridDim.x * BM) {
            wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[WM / 16][WN / 16];
            for (int i = 0; i < WM / 16; ++i)
                for (int j = 0; j < WN / 16; ++j)
                    wmma::fill_fragment(acc[i][j], 0.0f);
            for_each_slice<float, BM, BN, BK, THREADS>(
                m0, M, j0, J, k_begin, k_end, a, b, smem.as(), smem.bs(),
                [&](const float (*as)[LDA], const float (*bs)[LDB]) {
                    multiply_slice_tf32<BM, BN, WM, WN>(as, bs, wm, wn, acc);
                });
            for (int i = 0; i < WM / 16; ++i)
                for (int j = 0; j < WN / 16; ++j)
                    wmma::store_matrix_sync(&smem.tile().at(wm * WM + i * 16, wn * WN + j * 16), acc[i][j], LDC,
                                            Store::ALONG_ROWS ? wmma::mem_col_major : wmma::mem_row_major);
            smem.tile().template write_out<THREADS>(store, m0, M, j0, J);
        }
    }
#endif
}

// What a convolution pass runs its product on: tiled_gemm's SIMT cores, in T, or the TF32
// tensor cores (float only). The passes below are written once, for either.
template <typename T, int BM, int BN, int BK, int TM, int TN>
struct SimtGemm {
    template <typename OperandA, typename OperandB, typename Store>
    __device__ static void run(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                               const OperandB& b, const Store& store)
    {
        tiled_gemm<T, BM, BN, BK, TM, TN>(M, J, k_begin, k_end, a, b, store);
    }
};

template <int BM, int BN, int WM, int WN>
struct Tf32Gemm {
    template <typename OperandA, typename OperandB, typename Store>
    __device__ static void run(long long M, long long J, long long k_begin, long long k_end, const OperandA& a,
                               const OperandB& b, const Store& store)
    {
        tiled_gemm_tf32<BM, BN, WM, WN>(M, J, k_begin, k_end, a, b, store);
    }
};

// Each group's product in turn: blockIdx.z picks the first, grid-stride, so that any number
// of groups runs (depthwise: one per channel) within the grid's limits.
#define FOR_EACH_GROUP(g, G) for (int g = blockIdx.z; g < (G); g += gridDim.z)

// The threads of a GEMM kernel's block (tiled_gemm's THREADS). The kernels declare at least
// 1 block per SM: with the thread count alone, ptxas (sm_80, CUDA 13.0) capped some instances
// at 64 or 128 registers and spilled to local memory.
#define GEMM_THREADS ((BM / TM) * (BN / TN))
// The TF32 kernels' (tiled_gemm_tf32's THREADS): a warp per WM x WN patch of the BM x BN tile.
#define TF32_THREADS ((BM / WM) * (BN / WN) * 32)

// y[n, o, oh, ow] = b[o] + sum over (c, ky, kx) of x[n, g*C/G + c, oh*SH - PH + ky*DH, ow*SW - PW + kx*DW]
// * w[o, c, ky, kx], for o in group g and c below C/G.
template <typename T, typename Gemm>
__device__ void forward_pass(const T* x, const T* w, const T* b, T* y, const ConvGeometry& g)
{
    const int N = g.N, H = g.H, W = g.W, O = g.O, KH = g.KH, KW = g.KW, OH = g.OH, OW = g.OW, G = g.G;
    const int CG = g.group_inputs(), OG = g.group_outputs();
    const long long OHW = (long long)OH * OW;
    const long long taps = (long long)CG * KH * KW;
    FOR_EACH_GROUP(group, G) {
        const PatchByPixel<T> patch{x + (long long)group * CG * H * W, g};
        // w[o*taps + (c*KH + ky)*KW + kx]
        const Strided<T> filter{w + group * OG * taps, taps, (long long)KH * KW, g.taps()};
        const StoreRows<T> store{y + group * OG * OHW, b + group * OG, OHW, O};
        Gemm::run(N * OHW, OG, 0, taps, patch, filter, store);
    }
}

template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__(GEMM_THREADS, 1)
conv2d_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
               int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, int SH, int SW, int PH, int PW,
               int DH, int DW, int G)
{
    forward_pass<T, SimtGemm<T, BM, BN, BK, TM, TN>>(x, w, b, y,
                                                     {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G});
}

template <int BM, int BN, int WM, int WN>
__global__ void __launch_bounds__(TF32_THREADS, 1)
conv2d_forward_tf32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                    float* __restrict__ y, int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, int SH,
                    int SW, int PH, int PW, int DH, int DW, int G)
{
    forward_pass<float, Tf32Gemm<BM, BN, WM, WN>>(x, w, b, y,
                                                  {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G});
}

// dx as the seeds derive it: the "full" convolution of the stride-1 gradient map with the
// filter turned 180 degrees, with the terms that are zero dropped. On the stride-1 grid that
// dy is spread onto, row t = oh*SH holds dy row oh and every other row is an inserted zero;
// the dilated filter likewise holds w row ky at row ky*DH and zeros between. Correlating that
// grid, zero-padded by (KH - 1)*DH, with the dilated filter turned 180 degrees gives
//     dx[ih] = sum over ky of spread[ih + PH - ky*DH] * w[ky]
// (the inserted zero taps add nothing, and are left out already), whose term is an inserted
// zero unless SH divides ih + PH - ky*DH: unless ky is one of the taps of ih's stride phase
// (StridePhase). Keeping only those terms, the phase's rows are
//     dx[first + i*SH] = sum over j of dy[q + i - j*dy_step] * w[tap + j*tap_step]
// a full convolution of dy itself (dilated by dy_step) with the phase's taps turned 180
// degrees (j up, dy row down).
// This kernel computes phase (r_h, r_w) of dx, a GEMM over (o, j, jx) with K = O/G times the
// phase's taps: every term read is a real dy element, or 0 past dy's edge, where the full
// convolution pads. launch.conv2d_backward_data launches one per phase; stride 1 is one phase,
// the whole full convolution. Rows no window reached (when (H + 2P - DH*(KH-1) - 1) % S != 0)
// find no dy row in range and get 0; a phase with no taps (stride > kernel, or a dilation
// sharing a factor with the stride) is not launched, and the launcher starts dx at 0. Channel
// c takes channel c of every filter of its group, summed over those O/G filters (seed 002):
// the reduction over o. Groups are independent: group g's dx channels see only its dy channels.
template <typename T, typename Gemm>
__device__ void backward_data_pass(const T* dy, const T* w, T* dx, const ConvGeometry& g, const StridePhase& ph,
                                   const StridePhase& pw)
{
    const int N = g.N, H = g.H, W = g.W, OH = g.OH, OW = g.OW, KH = g.KH, KW = g.KW, G = g.G;
    const int CG = g.group_inputs(), OG = g.group_outputs();
    FOR_EACH_GROUP(group, G) {
        const PhaseDy<T> phase_dy{dy + (long long)group * OG * OH * OW, g, ph, pw};
        const PhaseFilter<T> filter{w + (long long)group * OG * CG * KH * KW, g, ph, pw};
        const StorePhaseRows<T> store{dx + (long long)group * CG * H * W, g, ph, pw};
        Gemm::run((long long)N * ph.pixels * pw.pixels, CG, 0, (long long)OG * ph.taps * pw.taps, phase_dy, filter,
                  store);
    }
}

// The kernels' phase parameters, (first, pixels, tap, taps, tap_step, q, dy_step) along H
// and along W, as the two StridePhase.
#define PHASES {first_h, pixels_h, tap_h, taps_h, tap_step_h, q_h, dy_step_h}, \
               {first_w, pixels_w, tap_w, taps_w, tap_step_w, q_w, dy_step_w}

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

// dw[o, c, ky, kx] = sum over (n, oh, ow) of dy[n, o, oh, ow] * x[n, g*C/G + c, oh*SH - PH + ky*DH,
// ow*SW - PW + kx*DW] for o in group g: the layer's input correlated with dy, summed over the
// batch and every position (weight sharing). Block z sums positions [chunk_index * chunk,
// (chunk_index + 1) * chunk) of group z / chunks into partials[chunk_index] (O x C/G*KH*KW),
// chunk_index = z % chunks, so that a batch-long reduction still keeps many blocks busy;
// add_partial_sums finishes the sum.
template <typename T, typename Gemm>
__device__ void backward_weight_pass(const T* x, const T* dy, T* partials, const ConvGeometry& g, long long chunk,
                                     int chunks)
{
    const int N = g.N, H = g.H, W = g.W, O = g.O, KH = g.KH, KW = g.KW, OH = g.OH, OW = g.OW, G = g.G;
    const int CG = g.group_inputs(), OG = g.group_outputs();
    const long long OHW = (long long)OH * OW;
    const long long taps = (long long)CG * KH * KW;
    for (long long z = blockIdx.z; z < (long long)G * chunks; z += gridDim.z) {
        const int group = (int)(z / chunks);
        const long long k_begin = z % chunks * chunk, k_end = min(k_begin + chunk, N * OHW);
        T* partial = partials + (z % chunks * O + (long long)group * OG) * taps;
        // dy[(n*O + o)*OH*OW + oh*OW + ow]
        const Strided<T> grad_out{dy + group * OG * OHW, OHW, O * OHW, g.pixels()};
        const PatchByTap<T> patch{x + (long long)group * CG * H * W, g};
        const StoreMatrix<T> store{partial, taps};
        Gemm::run(OG, taps, k_begin, k_end, grad_out, patch, store);
    }
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

template <int BM, int BN, int WM, int WN>
__global__ void __launch_bounds__(TF32_THREADS, 1)
conv2d_backward_weight_tf32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partials,
                            int N, int C, int H, int W, int O, int KH, int KW, int OH, int OW, int SH, int SW,
                            int PH, int PW, int DH, int DW, int G, long long chunk, int chunks)
{
    backward_weight_pass<float, Tf32Gemm<BM, BN, WM, WN>>(
        x, dy, partials, {N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW, G}, chunk, chunks);
}

// out[i] = partials[0][i] + partials[1][i] + ... in chunk order, one thread per element
// (BLOCK threads a block).
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK) add_partial_sums(const T* __restrict__ partials, T* __restrict__ out, int chunks, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
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
