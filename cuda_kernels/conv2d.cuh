// What the convolution modules share (conv2d.cu: SIMT, float and double; conv2d_tf32.cu: TF32
// tensor cores): the geometry, the operands each pass gathers, the stores, and the passes
// themselves, each written once for any Gemm (a struct whose static run(M, J, k_begin, k_end,
// a, b, store) computes C = A B through store).
//
// Forward, backward-data and weight gradient are each one matrix product C = A B whose
// operands are never stored (implicit GEMM): each block computes a BM x BN tile of C, and
// the operands below gather every element of A and B straight from the tensors.
//
//   pass             rows m        columns j     reduction k    A(m, k)          B(k, j)
//   forward          (n, oh, ow)   o             (c, ky, kx)    input patch      w[o, c, ky, kx]
//   backward data    (n, ih, iw)   c             (o, ky, kx)    dy               w[o, c, ky, kx]
//                    of one stride phase         of its taps
//   backward weight  o             (c, ky, kx)   (n, oh, ow)    dy               input patch
//
// With groups, each is G independent products, one per group (blockIdx.z), where o and c run
// over the group's O/G output and C/G input channels only: the pass moves its pointers to
// the group's first channel and keeps the whole tensors' sizes for the batch strides.

#include "gemm.cuh"

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

// Each group's product in turn: blockIdx.z picks the first, grid-stride, so that any number
// of groups runs (depthwise: one per channel) within the grid's limits.
#define FOR_EACH_GROUP(g, G) for (int g = blockIdx.z; g < (G); g += gridDim.z)

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
// This pass computes phase (r_h, r_w) of dx, a GEMM over (o, j, jx) with K = O/G times the
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
