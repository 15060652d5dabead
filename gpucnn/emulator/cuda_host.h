// The CUDA vocabulary a kernel file uses, defined for the host so that the very same
// .cu text compiles with g++. Included before the kernel source by the generated wrapper.
//
// The model behind every definition (see block.h): a launch runs its blocks one after
// another on one CPU thread, and a block's threads run as fibers that switch only at
// barriers. So a block's __shared__ variables can be plain static storage, and an atomic
// operation, which no other thread can interrupt, is an ordinary read-modify-write.
//
// Supported: the qualifiers below, static and `extern __shared__` (dynamic) shared memory,
// the atomics and intrinsics defined here, the <math.h> functions, printf, assert (a failed
// one ends the launch with an error, see launch.h); block.h adds __syncthreads, __syncwarp,
// the warp shuffles and votes, and mma.h the TF32 tensor-core instructions that
// cuda_kernels/mma_tf32.cuh writes as inline PTX (it calls mma.h's under GPUCNN_EMULATOR).
// Not supported: textures, surfaces, cooperative groups, the
// __constant__ memory a host writes through a symbol, half precision, inline PTX.
#pragma once

// Defined for the kernel source: where a kernel needs a GPU instruction in inline PTX, it
// calls the emulator's model of it instead.
#define GPUCNN_EMULATOR 1

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <math.h>
#include <type_traits>

// The emulator's own functions: never instrumented by the checking mode (sanitizer.h),
// which checks the kernel code's accesses only.
#define GPUCNN_EMU_RUNTIME __attribute__((no_sanitize_thread))

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
// __launch_bounds__ is enforced at launch: build.py adds a check to each kernel's body.
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// __restrict__ is GCC's own keyword already.
// Blocks run one at a time, so one static copy of a __shared__ variable serves every block.
// `extern __shared__ T name[];` (dynamic shared memory) is rewritten by the emulator into a
// pointer to the launch's shared_mem buffer, since `extern static` is not C++.
#define __shared__ static

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x = 1, unsigned int y = 1, unsigned int z = 1) : x(x), y(y), z(z) {}
};
// A GPU loads and stores a vector type whole, so its address must be a multiple of its size.
// The checking mode sees each copy as one access of that size (build.py keeps the compiler
// from splitting it into members) and checks the alignment.
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// Set by the launcher before each thread runs or resumes.
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

inline void __threadfence() {}
inline void __threadfence_block() {}


// CUDA's min/max accept mixed arithmetic types, as the usual arithmetic conversions do.
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
    using T = std::common_type_t<A, B>;
    return T(a) > T(b) ? T(a) : T(b);
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
    using T = std::common_type_t<A, B>;
    return T(a) < T(b) ? T(a) : T(b);
}

template <class T> inline T __ldg(const T* p) { return *p; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, sizeof i); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, sizeof d); return d; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, sizeof i); return i; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned int>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// Atomics: no other thread runs between the read and the write (see the top of this file).
// The checking mode sees each as one atomic access, which never races with another atomic.
namespace gpucnn_emu {
template <class T> struct same { using type = T; };  // std::type_identity, which is C++20
#ifdef GPUCNN_EMU_SANITIZE
enum Access : unsigned char;
GPUCNN_EMU_RUNTIME inline void check_access(const void* p, std::size_t size, Access access, const void* pc, bool natural);
#define GPUCNN_EMU_ATOMIC(p) gpucnn_emu::check_access(p, sizeof *p, gpucnn_emu::Access(2), __builtin_return_address(0), true)
#else
#define GPUCNN_EMU_ATOMIC(p) (void)0
#endif
}  // namespace gpucnn_emu
template <class T> GPUCNN_EMU_RUNTIME inline T atomicAdd(T* p, typename gpucnn_emu::same<T>::type v) {
    GPUCNN_EMU_ATOMIC(p); T old = *p; *p = old + v; return old;
}
template <class T> GPUCNN_EMU_RUNTIME inline T atomicSub(T* p, typename gpucnn_emu::same<T>::type v) {
    GPUCNN_EMU_ATOMIC(p); T old = *p; *p = old - v; return old;
}
template <class T> GPUCNN_EMU_RUNTIME inline T atomicMax(T* p, typename gpucnn_emu::same<T>::type v) {
    GPUCNN_EMU_ATOMIC(p); T old = *p; *p = old > v ? old : v; return old;
}
template <class T> GPUCNN_EMU_RUNTIME inline T atomicMin(T* p, typename gpucnn_emu::same<T>::type v) {
    GPUCNN_EMU_ATOMIC(p); T old = *p; *p = old < v ? old : v; return old;
}
template <class T> GPUCNN_EMU_RUNTIME inline T atomicExch(T* p, typename gpucnn_emu::same<T>::type v) {
    GPUCNN_EMU_ATOMIC(p); T old = *p; *p = v; return old;
}
template <class T>
GPUCNN_EMU_RUNTIME inline T atomicCAS(T* p, typename gpucnn_emu::same<T>::type compare,
                                      typename gpucnn_emu::same<T>::type v) {
    GPUCNN_EMU_ATOMIC(p);
    T old = *p;
    if (old == compare) *p = v;
    return old;
}
