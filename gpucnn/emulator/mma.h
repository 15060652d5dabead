// nvcuda::wmma for the emulator: the warp-level matrix operations of CUDA's <mma.h> that
// our TF32 kernels use, so that `#include <mma.h>` in a kernel finds this file (build.py
// compiles with -I on this directory) where NVRTC finds CUDA's.
//
// Supported: the TF32 shape m16n16k8 (fragment<matrix_a, 16, 16, 8, precision::tf32,
// row_major | col_major>, the same for matrix_b, fragment<accumulator, 16, 16, 8, float>),
// fill_fragment, load_matrix_sync, store_matrix_sync, mma_sync and __float_to_tf32.
// Any other shape or type is an incomplete fragment, a compile error.
//
// What the hardware does, and so this file:
// - Each of the 32 lanes holds num_elements of a fragment in x[]; which element is where is
//   unspecified by CUDA (it may change between architectures), so a correct kernel only
//   reads x[] element-wise (to round, scale, ...). Here lane L holds the row-major elements
//   L * num_elements ... L * num_elements + num_elements - 1 of the fragment's matrix.
// - The _sync operations are warp collectives: every lane of the warp calls the same one
//   (same call site), and the warp must be whole. Lanes meet at a warp barrier (block.h),
//   and a lane missing (exited, or at another call) ends the launch with a barrier error.
// - mma_sync reads only the TF32 part of A and B (sign, 8 exponent bits, 10 mantissa bits:
//   the 13 low bits are ignored, i.e. truncated), multiplies exactly (11 x 11 significant
//   bits fit a float) and accumulates in float32, one fused multiply-add per k in order k =
//   0..7. The tensor core's own accumulation is not IEEE-sequential, so results agree with a
//   GPU to float32 rounding of the sum, not bit for bit.
// - __float_to_tf32 is cvt.rna.tf32.f32: round to nearest, ties away from zero.
// - Pointers must be 256-bit (32-byte) aligned and ldm a multiple of 16 bytes (4 floats): the
//   checking mode checks it.
//
// The checking mode (sanitizer.h) does not instrument this file's accesses (they are the
// emulator's, GPUCNN_EMU_RUNTIME), so load_matrix_sync and store_matrix_sync check each
// element they touch themselves, as the lane that touches it: an out-of-bounds, racing or
// uninitialized tile element is reported at the kernel's line that loads or stores it.
#pragma once

namespace nvcuda {
namespace wmma {

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
namespace precision {
struct tf32;
}
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment;

// Rows x Cols elements of a matrix, spread over the 32 lanes of a warp.
template <int Rows, int Cols>
struct fragment_base {
    static constexpr int rows = Rows, cols = Cols;
    enum { num_elements = Rows * Cols / 32 };
    using storage_element_type = float;
    float x[num_elements];
};

template <class Layout>
class fragment<matrix_a, 16, 16, 8, precision::tf32, Layout> : public fragment_base<16, 8> {
public:
    using element_type = precision::tf32;
    using layout = Layout;
};
template <class Layout>
class fragment<matrix_b, 16, 16, 8, precision::tf32, Layout> : public fragment_base<8, 16> {
public:
    using element_type = precision::tf32;
    using layout = Layout;
};
template <>
class fragment<accumulator, 16, 16, 8, float, void> : public fragment_base<16, 16> {
public:
    using element_type = float;
};

GPUCNN_EMU_RUNTIME inline float __float_to_tf32(float in) {
    std::uint32_t bits;
    std::memcpy(&bits, &in, sizeof bits);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & ~0x1fffu;  // Inf and NaN stay
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

template <class Fragment>
GPUCNN_EMU_RUNTIME inline void fill_fragment(Fragment& f, float value) {
    for (int i = 0; i < Fragment::num_elements; ++i) f.x[i] = value;
}

}  // namespace wmma
}  // namespace nvcuda

namespace gpucnn_emu {

// The call site of each lane's warp collective, compared once the warp has met.
inline const void* collective_site[max_threads];
// The operands each lane hands to mma_sync, read by the other lanes of its warp.
inline const float* mma_operand[max_threads][2];

// Meets the other 31 lanes of this warp at a wmma operation called from `site`; ends the
// launch unless all of them arrive there. The caller ends the operation with leave_warp(),
// so that no lane moves on (to another call, or its end) before every lane has checked.
GPUCNN_EMU_RUNTIME inline void meet_warp(const char* operation, const void* site) {
    const unsigned tid = current->tid, first = tid & ~(warpSize - 1u);
    char message[256];
    if (first + warpSize > threads_per_block) {
        std::snprintf(message, sizeof message,
                      "barrier error: wmma::%s needs the whole warp, but the block's %u threads leave this warp "
                      "%u lanes",
                      operation, threads_per_block, threads_per_block - first);
        fail("barrier", message);
    }
    collective_site[tid] = site;
    warp_barrier(0xffffffffu);
    for (unsigned lane = 0; lane < warpSize; ++lane) {
        if (state[first + lane] == State::exited)
            std::snprintf(message, sizeof message,
                          "barrier error: wmma::%s is a warp collective, but lane %u of the warp has exited "
                          "(divergent lanes in warp)",
                          operation, lane);
        else if (collective_site[first + lane] != site)
            std::snprintf(message, sizeof message,
                          "barrier error: wmma::%s is a warp collective, but lane %u of the warp is at another "
                          "call (divergent lanes in warp)",
                          operation, lane);
        else
            continue;
        fail("barrier", message);
    }
}

GPUCNN_EMU_RUNTIME inline void leave_warp() { warp_barrier(0xffffffffu); }

// Only in the checking mode, which knows where each argument starts (NumPy aligns arrays to
// 16 bytes only, CuPy to 256).
GPUCNN_EMU_RUNTIME inline void check_tile_pointer([[maybe_unused]] const char* operation, [[maybe_unused]] const void* p,
                                                  [[maybe_unused]] unsigned ldm) {
#ifdef GPUCNN_EMU_SANITIZE
    // A GPU allocation starts 256-byte aligned: an argument's alignment is its offset's.
    const Region* r = find_region(static_cast<const unsigned char*>(p));
    const auto address = reinterpret_cast<std::uintptr_t>(p) -
                         (r && r->kind == argument_region ? reinterpret_cast<std::uintptr_t>(r->data) : 0);
    if (address % 32 == 0 && ldm % 4 == 0) return;
    char message[256];
    std::snprintf(message, sizeof message,
                  "misaligned wmma::%s: the pointer must be a multiple of 32 bytes and ldm of 4 floats (16 bytes), "
                  "but the pointer is %zu bytes past a multiple of 32 and ldm is %u",
                  operation, static_cast<std::size_t>(address % 32), ldm);
    fail("misaligned", message);
#endif
}

// Element i of this lane's share of a rows x cols fragment, which sits at `row_major`
// ? p[r * ldm + c] : p[c * ldm + r]; the checking mode checks the access first.
template <int Rows, int Cols>
GPUCNN_EMU_RUNTIME inline float* tile_element(float* p, unsigned ldm, bool row_major, int i,
                                              [[maybe_unused]] bool write, [[maybe_unused]] const void* site) {
    const int e = static_cast<int>(current->tid % warpSize) * (Rows * Cols / 32) + i;
    const std::size_t r = e / Cols, c = e % Cols;
    float* element = p + (row_major ? r * ldm + c : c * ldm + r);
#ifdef GPUCNN_EMU_SANITIZE
    check_access(element, sizeof(float), write ? write_access : read_access, site, true);
#endif
    return element;
}

template <class Fragment>
GPUCNN_EMU_RUNTIME inline void load_tile(const char* operation, Fragment& f, const float* p, unsigned ldm,
                                         bool row_major, const void* site) {
    check_tile_pointer(operation, p, ldm);
    meet_warp(operation, site);
    for (int i = 0; i < Fragment::num_elements; ++i)
        f.x[i] = *tile_element<Fragment::rows, Fragment::cols>(const_cast<float*>(p), ldm, row_major, i, false, site);
    leave_warp();
}

// Only the TF32 bits of an operand take part in a product.
GPUCNN_EMU_RUNTIME inline float tf32_operand(float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    if ((bits & 0x7f800000u) != 0x7f800000u || (bits & 0x7fffffu) == 0) bits &= ~0x1fffu;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

}  // namespace gpucnn_emu

namespace nvcuda {
namespace wmma {

template <class Use, class Layout>
__attribute__((noinline)) GPUCNN_EMU_RUNTIME void load_matrix_sync(
    fragment<Use, 16, 16, 8, precision::tf32, Layout>& a, const float* p, unsigned ldm) {
    static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                  "a matrix_a or matrix_b fragment names its layout, row_major or col_major");
    gpucnn_emu::load_tile("load_matrix_sync", a, p, ldm, std::is_same_v<Layout, row_major>,
                          __builtin_return_address(0));
}

__attribute__((noinline)) GPUCNN_EMU_RUNTIME inline void load_matrix_sync(
    fragment<accumulator, 16, 16, 8, float>& c, const float* p, unsigned ldm, layout_t layout) {
    gpucnn_emu::load_tile("load_matrix_sync", c, p, ldm, layout == mem_row_major, __builtin_return_address(0));
}

__attribute__((noinline)) GPUCNN_EMU_RUNTIME inline void store_matrix_sync(
    float* p, const fragment<accumulator, 16, 16, 8, float>& c, unsigned ldm, layout_t layout) {
    const void* site = __builtin_return_address(0);
    gpucnn_emu::check_tile_pointer("store_matrix_sync", p, ldm);
    gpucnn_emu::meet_warp("store_matrix_sync", site);
    for (int i = 0; i < c.num_elements; ++i)
        *gpucnn_emu::tile_element<16, 16>(p, ldm, layout == mem_row_major, i, true, site) = c.x[i];
    gpucnn_emu::leave_warp();
}

// d = a * b + c over the warp: lanes meet, each computes its own elements of d from every
// lane's a and b, and they meet again before any lane may change its operands.
template <class LayoutA, class LayoutB>
__attribute__((noinline)) GPUCNN_EMU_RUNTIME void mma_sync(
    fragment<accumulator, 16, 16, 8, float>& d, const fragment<matrix_a, 16, 16, 8, precision::tf32, LayoutA>& a,
    const fragment<matrix_b, 16, 16, 8, precision::tf32, LayoutB>& b, const fragment<accumulator, 16, 16, 8, float>& c) {
    using namespace gpucnn_emu;
    const unsigned tid = current->tid, first = tid & ~(warpSize - 1u), lane = tid - first;
    mma_operand[tid][0] = a.x;
    mma_operand[tid][1] = b.x;
    meet_warp("mma_sync", __builtin_return_address(0));
    constexpr int a_share = 16 * 8 / 32, b_share = 8 * 16 / 32, d_share = 16 * 16 / 32;
    float result[d_share];
    for (int i = 0; i < d_share; ++i) {
        const int e = static_cast<int>(lane) * d_share + i, row = e / 16, col = e % 16;
        float sum = c.x[i];
        for (int k = 0; k < 8; ++k) {
            const int ea = row * 8 + k, eb = k * 16 + col;
            const float av = mma_operand[first + ea / a_share][0][ea % a_share];
            const float bv = mma_operand[first + eb / b_share][1][eb % b_share];
            sum = fmaf(tf32_operand(av), tf32_operand(bv), sum);
        }
        result[i] = sum;
    }
    leave_warp();
    for (int i = 0; i < d_share; ++i) d.x[i] = result[i];
}

}  // namespace wmma
}  // namespace nvcuda
