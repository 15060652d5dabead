// The emulator's entry points: a launch runs the grid's blocks one after another (block.h
// runs each block's threads), and each kernel's parameter list is described to Python,
// which checks every launch's arguments against it. Included by the generated wrapper
// after cuda_host.h, before the kernel source.
#pragma once

#include <utility>

#include "block.h"

namespace gpucnn_emu {

[[noreturn]] inline void device_assert_failed(const char* expr, const char* file, unsigned line) {
    char message[512];
    std::snprintf(message, sizeof message, "device-side assert triggered: %s:%u: assert(%s) failed", file, line, expr);
    fail("assert", message);
}

}  // namespace gpucnn_emu

// glibc's assert() calls __assert_fail. This hidden definition takes those calls from the
// kernel code, so a failed assert ends the launch with an error naming it, as a device-side
// assert does, instead of aborting the Python process.
extern "C" __attribute__((visibility("hidden"))) void __assert_fail(
    const char* expr, const char* file, unsigned int line, const char*) noexcept {
    gpucnn_emu::device_assert_failed(expr, file, line);
}

namespace gpucnn_emu {

// Calls the kernel with parameter i read from the 8-byte slot i that Python filled (every
// parameter is a pointer or an arithmetic scalar, at most 8 bytes).
template <class... A>
struct Call {
    void (*kernel)(A...);
    const std::uint64_t* slots;
    template <size_t... I>
    GPUCNN_EMU_RUNTIME void operator()(std::index_sequence<I...>) const {
        kernel(*reinterpret_cast<const std::remove_cv_t<A>*>(slots + I)...);
    }
    GPUCNN_EMU_RUNTIME static void run(const void* self) {
        (*static_cast<const Call*>(self))(std::index_sequence_for<A...>{});
    }
};

// The limit on static plus dynamic shared memory, checked after the first block (the sizes
// of a kernel's static __shared__ variables are known once it has run).
GPUCNN_EMU_RUNTIME inline bool shared_memory_fits(size_t dynamic) {
    const size_t fixed = static_shared_bytes();
    if (fixed > max_static_shared_bytes)
        std::snprintf(last_error, sizeof last_error,
                      "launch: the kernel declares %zu bytes of static __shared__ memory, more than the %zu a "
                      "kernel may have (ptxas refuses it)",
                      fixed, max_static_shared_bytes);
    else if (fixed + dynamic > max_dynamic_shared_bytes)
        std::snprintf(last_error, sizeof last_error,
                      "launch: %zu bytes of static and %zu of dynamic shared memory exceed the %zu a block may "
                      "use without an opt-in",
                      fixed, dynamic, max_dynamic_shared_bytes);
    else
        return true;
    std::snprintf(last_check, sizeof last_check, "launch");
    return false;
}

// CuPy compiles every kernel with -ftz=true: single-precision arithmetic flushes subnormal
// inputs and results to zero. `flush` (set by Python for kernels whose floating parameters
// are all float) does the same with the SSE control bits FTZ and DAZ.
// (Elsewhere than x86 subnormals are kept: results then differ from a GPU's in them only.)
struct FlushSubnormals {
#if defined(__x86_64__) || defined(__i386__)
    unsigned saved = __builtin_ia32_stmxcsr();
    explicit FlushSubnormals(bool flush) {
        if (flush) __builtin_ia32_ldmxcsr(saved | 0x8040u);
    }
    ~FlushSubnormals() { __builtin_ia32_ldmxcsr(saved); }
#else
    explicit FlushSubnormals(bool) {}
#endif
};

// grid and block are 3 positive ints each, slots hold one value per kernel parameter;
// Python has checked all of them and holds a lock, so launches never overlap. Returns 0, or
// 1 with last_error and last_check set.
template <class... A>
GPUCNN_EMU_RUNTIME int launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block,
                              const std::uint64_t* slots, size_t shared, unsigned flags) {
    const Call<A...> call{kernel, slots};
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    threads_per_block = block[0] * block[1] * block[2];
    thread_body = &Call<A...>::run;
    thread_closure = &call;
    launching = reinterpret_cast<const void*>(kernel);
    shared_bytes = shared;
    // Past the launch's shared_mem lies memory a GPU would not give the kernel: all-ones too.
    std::memset(shared_buffer + shared, 0xff, max_dynamic_shared_bytes - shared);
#ifdef GPUCNN_EMU_SANITIZE
    dynamic_region.size = shared;
#endif
    aborted = false;
    last_error[0] = last_check[0] = '\0';
    const FlushSubnormals ftz(flags & 1u);
    bool ok = true;
    std::uint32_t serial = 0;
    for (unsigned z = 0; ok && z < grid[2]; ++z)
        for (unsigned y = 0; ok && y < grid[1]; ++y)
            for (unsigned x = 0; ok && x < grid[0]; ++x, ++serial) {
                blockIdx = uint3{x, y, z};
#ifdef GPUCNN_EMU_SANITIZE
                start_block_checks(serial, threads_per_block);
#endif
                ok = run_block() && (serial > 0 || shared_memory_fits(shared));
            }
    std::fflush(stdout);  // kernel printf output appears at the end of its launch, as with CUDA
    return ok ? 0 : 1;
}

// --- Describing a kernel's parameters to Python, which checks every launch's arguments.

template <class T>
constexpr const char* dtype_name() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, float>) return "float32";
    else if constexpr (std::is_same_v<U, double>) return "float64";
    else if constexpr (std::is_same_v<U, bool>) return "bool";
    else if constexpr (std::is_integral_v<U>) {
        constexpr bool s = std::is_signed_v<U>;
        if constexpr (sizeof(U) == 1) return s ? "int8" : "uint8";
        else if constexpr (sizeof(U) == 2) return s ? "int16" : "uint16";
        else if constexpr (sizeof(U) == 4) return s ? "int32" : "uint32";
        else return s ? "int64" : "uint64";
    } else if constexpr (std::is_void_v<U>) return "void";
    else return "";
}

// Appends "kind|const|dtype|...[with P = <the C++ type>]\n", kind being pointer, scalar or other.
template <class P>
void describe_parameter(char* lines, size_t size) {
    using T = std::decay_t<P>;
    const char* kind = "other";
    const char* constness = "mutable";
    const char* dtype = "";
    if constexpr (std::is_pointer_v<T>) {
        kind = "pointer";
        if (std::is_const_v<std::remove_pointer_t<T>>) constness = "const";
        dtype = dtype_name<std::remove_pointer_t<T>>();
    } else if constexpr (std::is_arithmetic_v<T>) {
        kind = "scalar";
        dtype = dtype_name<T>();
    }
    const size_t used = std::strlen(lines);
    std::snprintf(lines + used, size - used, "%s|%s|%s|%s\n", kind, constness, dtype, __PRETTY_FUNCTION__);
}

template <class... A>
const char* signature(void (*)(A...)) {
    static char lines[8192];
    if (!lines[0]) (describe_parameter<A>(lines, sizeof lines), ...);
    return lines;
}

}  // namespace gpucnn_emu

#define GPUCNN_EMU_EXPORT extern "C" __attribute__((visibility("default")))

GPUCNN_EMU_EXPORT const char* gpucnn_emu_last_error() { return gpucnn_emu::last_error; }
GPUCNN_EMU_EXPORT const char* gpucnn_emu_last_check() { return gpucnn_emu::last_check; }

#ifdef GPUCNN_EMU_SANITIZE
GPUCNN_EMU_EXPORT std::uintptr_t gpucnn_emu_last_pc() { return gpucnn_emu::last_pc; }

// The next launch's global memory: per pointer argument (or group of aliasing arguments),
// name, data, size, redzone bytes on each side, written-byte shadow, granule shadow.
GPUCNN_EMU_EXPORT void gpucnn_emu_set_regions(const std::uint64_t* table, unsigned count) {
    using namespace gpucnn_emu;
    ++region_generation;
    argument_region_count = count < max_argument_regions ? count : max_argument_regions;
    for (unsigned i = 0; i < argument_region_count; ++i) {
        const std::uint64_t* row = table + 6 * i;
        auto* data = reinterpret_cast<unsigned char*>(row[1]);
        argument_regions[i] = {reinterpret_cast<const char*>(row[0]), data - row[3], data, row[2], data + row[2] + row[3],
                               reinterpret_cast<unsigned char*>(row[4]), reinterpret_cast<Granule*>(row[5]),
                               argument_region};
    }
}
#endif
