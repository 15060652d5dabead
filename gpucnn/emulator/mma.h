// The TF32 tensor-core instructions that cuda_kernels/mma_tf32.cuh writes as inline PTX, for
// the emulator, which cannot run PTX: under GPUCNN_EMULATOR (cuda_host.h) that header calls
// these instead. The wrapper includes this file before the kernel source.
//
// - cvt_rna_tf32 is cvt.rna.tf32.f32: a float rounded to 10 mantissa bits, to nearest, ties
//   away from zero (half a unit of the 10th bit added to the magnitude, then the 13 low bits
//   cleared); Inf and NaN pass unchanged.
// - mma_m16n8k8_tf32 is mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, a warp collective:
//   the 32 lanes meet, and each element of D is computed from the registers of the lanes
//   that hold its row of A, its column of B and its C, exactly where the PTX ISA puts them
//   ("Matrix Fragments for mma.m16n8k8", .tf32; g = lane / 4, t = lane % 4):
//     a0 = A(g, t), a1 = A(g + 8, t), a2 = A(g, t + 4), a3 = A(g + 8, t + 4)
//     b0 = B(t, g), b1 = B(t + 4, g)
//     c0 = C(g, 2t), c1 = C(g, 2t + 1), c2 = C(g + 8, 2t), c3 = C(g + 8, 2t + 1)
//   so a kernel that puts an element in the wrong lane or register gets a wrong product here
//   as on a GPU. The arithmetic of each element is tensor_core.h's tf32_dot_add, which reads
//   only the TF32 bits of the A and B registers, as the tensor core does.
//   Every lane of the warp must call it from the same place (`.aligned`): a lane that has
//   exited, or waits at another call, or a block that leaves the warp short of 32 lanes,
//   ends the launch with a barrier error.
//
// Fragments are registers: the kernel loads them itself, with its own loads, which the
// checking mode (sanitizer.h) checks as any other (out of bounds, uninitialized, racing).
#pragma once

#include "tensor_core.h"

namespace gpucnn_emu {

// The call site of each lane's warp collective, compared once the warp has met.
inline const void* collective_site[max_threads];
// The registers each lane hands to an mma, read by the other lanes of its warp.
inline const unsigned* mma_a[max_threads];
inline const unsigned* mma_b[max_threads];

// Meets the other 31 lanes of this warp at `operation` called from `site`; ends the launch
// unless all of them arrive there. The caller ends the operation with leave_warp(), so that
// no lane moves on (to another call, or its end) before every lane has read what it needs.
GPUCNN_EMU_RUNTIME inline void meet_warp(const char* operation, const void* site) {
    const unsigned tid = current->tid, first = tid & ~(warpSize - 1u);
    char message[256];
    if (first + warpSize > threads_per_block) {
        std::snprintf(message, sizeof message,
                      "barrier error: %s needs the whole warp, but the block's %u threads leave this warp %u lanes",
                      operation, threads_per_block, threads_per_block - first);
        fail("barrier", message);
    }
    collective_site[tid] = site;
    warp_barrier(0xffffffffu);
    for (unsigned lane = 0; lane < warpSize; ++lane) {
        if (state[first + lane] == State::exited)
            std::snprintf(message, sizeof message,
                          "barrier error: %s is a warp collective, but lane %u of the warp has exited "
                          "(divergent lanes in warp)",
                          operation, lane);
        else if (collective_site[first + lane] != site)
            std::snprintf(message, sizeof message,
                          "barrier error: %s is a warp collective, but lane %u of the warp is at another call "
                          "(divergent lanes in warp)",
                          operation, lane);
        else
            continue;
        fail("barrier", message);
    }
}

GPUCNN_EMU_RUNTIME inline void leave_warp() { warp_barrier(0xffffffffu); }

GPUCNN_EMU_RUNTIME inline float bits_as_float(unsigned bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

GPUCNN_EMU_RUNTIME inline unsigned cvt_rna_tf32(float x) {
    std::uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & ~0x1fffu;
    return bits;
}

// acc = A B + acc over the warp: lanes meet, each computes its own four elements of D from
// every lane's a and b, and they meet again before any lane may change its registers.
__attribute__((noinline)) GPUCNN_EMU_RUNTIME inline void mma_m16n8k8_tf32(float (&acc)[4], const unsigned (&a)[4],
                                                                          const unsigned (&b)[2]) {
    const unsigned tid = current->tid, first = tid & ~(warpSize - 1u), lane = tid - first;
    mma_a[tid] = a;
    mma_b[tid] = b;
    meet_warp("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", __builtin_return_address(0));
    const unsigned g = lane / 4, t = lane % 4;
    float d[4];
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float a_row[8], b_col[8];
        for (unsigned k = 0; k < 8; ++k) {
            // A(row, k) is register (row >= 8) + 2 (k >= 4) of lane 4 (row % 8) + k % 4;
            // B(k, col) is register (k >= 4) of lane 4 col + k % 4.
            a_row[k] = bits_as_float(mma_a[first + 4 * (row % 8) + k % 4][(row >= 8) + 2 * (k >= 4)]);
            b_col[k] = bits_as_float(mma_b[first + 4 * col + k % 4][k >= 4]);
        }
        d[i] = tf32_dot_add(a_row, b_col, acc[i]);
    }
    leave_warp();
    for (unsigned i = 0; i < 4; ++i) acc[i] = d[i];
}

}  // namespace gpucnn_emu
