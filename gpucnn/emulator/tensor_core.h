// The arithmetic of one element of a TF32 tensor-core product,
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d = a[0] b[0] + ... + a[7] b[7] + c, bit
// for bit as MMA-Sim models the GPU that GPUCNN_EMU_SM names (build.py sets it from
// GPUCNN_EMULATOR_ARCH).
//
// The tensor core does not add in IEEE order. Each architecture has a fused dot-product-add,
// modelled as in Microsoft's MMA-Sim (microsoft/MMA-Sim, mmasim/arithmetic/fdpa.py, t_fdpa;
// parameters in mmasim/nv_ptx/sim.py), which its authors checked against the hardware:
// - it reads only the TF32 bits of a and b: the low 13 bits of each float32 are dropped
//   (truncation, not rounding; a NaN whose payload lies in those bits reads as an infinity);
// - each product is exact, and each term (the L products of a group, and c) gets a nominal
//   exponent: the sum of its operands' exponents, a subnormal operand counting as 2^-126
//   (significand below 1), a zero term the architecture's floor `zero_exponent`;
// - every term is cut (toward zero) to F fraction bits below the largest nominal exponent,
//   and these are added exactly;
// - the sum is cut toward zero to float32, subnormals kept; past the float32 range it is an
//   infinity; a zero is +0, a NaN 0x7fffffff. Infinities and NaNs combine as in IEEE.
// Ampere and Ada add L = 4 products at a time with F = 24, so k = 0..3 go first and their
// float32 result is the c of k = 4..7; Hopper and Blackwell add all 8 at once with F = 25.
#pragma once

#include "cuda_host.h"

#ifndef GPUCNN_EMU_SM
#error "tensor_core.h: GPUCNN_EMU_SM (the emulated architecture, e.g. 90) is set by gpucnn/emulator/build.py"
#endif

namespace gpucnn_emu {
namespace tensor_core {

#if GPUCNN_EMU_SM == 80 || GPUCNN_EMU_SM == 86 || GPUCNN_EMU_SM == 89
constexpr int group = 4, fraction_bits = 24, zero_exponent = -132;
#elif GPUCNN_EMU_SM == 90 || GPUCNN_EMU_SM == 100 || GPUCNN_EMU_SM == 120
constexpr int group = 8, fraction_bits = 25, zero_exponent = -133;
#else
#error "tensor_core.h: no TF32 tensor-core model for this GPUCNN_EMU_SM"
#endif

constexpr std::uint32_t canonical_nan = 0x7fffffffu, positive_infinity = 0x7f800000u, sign_bit = 0x80000000u;

GPUCNN_EMU_RUNTIME inline std::uint32_t bits_of(float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    return bits;
}

GPUCNN_EMU_RUNTIME inline float float_of(std::uint32_t bits) {
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

// A finite float32 as significand * 2^(exponent - 23): the significand with its implicit bit
// (below 2^24), or, for a subnormal, without it and the exponent -126; a zero has the floor.
struct Unpacked {
    std::uint64_t significand;
    int exponent;
};

GPUCNN_EMU_RUNTIME inline Unpacked unpack(std::uint32_t bits) {
    const std::uint32_t field = (bits >> 23) & 0xffu, fraction = bits & 0x7fffffu;
    if (field != 0) return {fraction | 0x800000u, static_cast<int>(field) - 127};
    return {fraction, fraction != 0 ? -126 : zero_exponent};
}

GPUCNN_EMU_RUNTIME inline bool is_nan(std::uint32_t bits) { return (bits & 0x7fffffffu) > positive_infinity; }
GPUCNN_EMU_RUNTIME inline bool is_infinite(std::uint32_t bits) { return (bits & 0x7fffffffu) == positive_infinity; }
GPUCNN_EMU_RUNTIME inline bool is_zero(std::uint32_t bits) { return (bits & 0x7fffffffu) == 0; }

// magnitude * 2^shift, cut toward zero.
GPUCNN_EMU_RUNTIME inline std::uint64_t scaled(std::uint64_t magnitude, int shift) {
    if (shift >= 0) return magnitude << shift;
    return -shift >= 64 ? 0 : magnitude >> -shift;
}

// c + a[0] b[0] + ... + a[n-1] b[n-1] as one fused dot-product-add, a and b already TF32.
template <int n>
GPUCNN_EMU_RUNTIME inline std::uint32_t fused_dot_add(const std::uint32_t* a, const std::uint32_t* b,
                                                      std::uint32_t c) {
    bool nan = is_nan(c), infinite[2] = {false, false};
    if (is_infinite(c)) infinite[c >> 31] = true;
    for (int k = 0; k < n; ++k) {
        const std::uint32_t sign = (a[k] ^ b[k]) >> 31;
        if (is_nan(a[k]) || is_nan(b[k]))
            nan = true;
        else if ((is_infinite(a[k]) || is_infinite(b[k])) && (is_zero(a[k]) || is_zero(b[k])))
            nan = true;  // 0 * inf
        else if (is_infinite(a[k]) || is_infinite(b[k]))
            infinite[sign] = true;
    }
    if (nan || (infinite[0] && infinite[1])) return canonical_nan;
    if (infinite[0] || infinite[1]) return positive_infinity | (infinite[1] ? sign_bit : 0);

    // Terms as significand * 2^(exponent - 23): a product's 46 fraction bits end in 26 zeros
    // (13 dropped bits in each operand), so it fits 23 exactly.
    std::uint64_t magnitude[n + 1];
    int exponent[n + 1];
    bool negative[n + 1];
    for (int k = 0; k < n; ++k) {
        const Unpacked x = unpack(a[k]), y = unpack(b[k]);
        const bool zero = x.significand == 0 || y.significand == 0;
        magnitude[k] = (x.significand * y.significand) >> 23;
        exponent[k] = zero ? zero_exponent : x.exponent + y.exponent;
        negative[k] = (a[k] ^ b[k]) >> 31;
    }
    const Unpacked z = unpack(c);
    magnitude[n] = z.significand;
    exponent[n] = z.exponent;
    negative[n] = c >> 31;

    int top = exponent[0];
    for (int k = 1; k <= n; ++k) top = exponent[k] > top ? exponent[k] : top;
    // The sum in units of 2^(top - fraction_bits); each term below 2^27 of them, so no overflow.
    std::int64_t sum = 0;
    for (int k = 0; k <= n; ++k) {
        const auto term = static_cast<std::int64_t>(scaled(magnitude[k], exponent[k] - top + fraction_bits - 23));
        sum += negative[k] ? -term : term;
    }
    if (sum == 0) return 0;

    const std::uint32_t sign = sum < 0 ? sign_bit : 0;
    const std::uint64_t total = sum < 0 ? -static_cast<std::uint64_t>(sum) : static_cast<std::uint64_t>(sum);
    const int high = 63 - __builtin_clzll(total), power = top - fraction_bits + high;  // total's leading bit
    if (power > 127) return sign | positive_infinity;
    if (power >= -126) {
        const auto fraction = static_cast<std::uint32_t>(scaled(total, 23 - high)) & 0x7fffffu;
        return sign | static_cast<std::uint32_t>(power + 127) << 23 | fraction;
    }
    const auto subnormal = static_cast<std::uint32_t>(scaled(total, top - fraction_bits + 149));  // units of 2^-149
    return subnormal == 0 ? 0 : sign | subnormal;
}

}  // namespace tensor_core

// One element of D for mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: a is one row of A
// (k = 0..7), b one column of B, c the accumulator element, each the float32 a lane holds.
GPUCNN_EMU_RUNTIME inline float tf32_dot_add(const float (&a)[8], const float (&b)[8], float c) {
    using namespace tensor_core;
    std::uint32_t x[8], y[8];
    for (int k = 0; k < 8; ++k) {
        x[k] = bits_of(a[k]) & ~0x1fffu;
        y[k] = bits_of(b[k]) & ~0x1fffu;
    }
    std::uint32_t d = bits_of(c);
    for (int k = 0; k < 8; k += group) d = fused_dot_add<group>(x + k, y + k, d);
    return float_of(d);
}

}  // namespace gpucnn_emu
