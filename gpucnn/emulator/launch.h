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
    fail(message);
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
    void operator()(std::index_sequence<I...>) const {
        kernel(*reinterpret_cast<const std::remove_cv_t<A>*>(slots + I)...);
    }
    static void run(const void* self) { (*static_cast<const Call*>(self))(std::index_sequence_for<A...>{}); }
};

// grid and block are 3 positive ints each, slots hold one value per kernel parameter;
// Python has checked all of them and holds a lock, so launches never overlap. Returns 0, or
// 1 with last_error set.
template <class... A>
int launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, const std::uint64_t* slots,
           size_t shared) {
    const Call<A...> call{kernel, slots};
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    threads_per_block = block[0] * block[1] * block[2];
    thread_body = &Call<A...>::run;
    thread_closure = &call;
    shared_bytes = shared;
    // Past the launch's shared_mem lies memory a GPU would not give the kernel: all-ones too.
    std::memset(shared_buffer + shared, 0xff, sizeof shared_buffer - shared);
    aborted = false;
    last_error[0] = '\0';
    bool ok = true;
    for (unsigned z = 0; ok && z < grid[2]; ++z)
        for (unsigned y = 0; ok && y < grid[1]; ++y)
            for (unsigned x = 0; ok && x < grid[0]; ++x) {
                blockIdx = uint3{x, y, z};
                ok = run_block();
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
