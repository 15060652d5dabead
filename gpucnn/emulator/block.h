// How one block's threads run on one CPU thread, and the intrinsics that synchronize them:
// __syncthreads (and its _count/_and/_or forms), __syncwarp, the warp shuffles and votes.
//
// Every thread runs on a fiber (fiber.h), and fibers are started lazily: one fiber runs
// thread 0, 1, 2, ... to completion, one after another, until a thread reaches a barrier;
// that fiber then parks and a fresh fiber goes on with the next thread. A kernel without
// barriers therefore costs one fiber per block. Once every thread has started, parked
// threads are released barrier by barrier, each running to its next barrier or its end:
// - a warp barrier (__syncwarp, a shuffle or vote) opens once every lane named in the
//   masks of its waiting lanes is waiting there too or has exited;
// - __syncthreads opens once every thread of the block is waiting there or has exited.
// No thread passes a barrier early, which is exactly what a correct kernel relies on; if
// no barrier can open (threads wait at different ones), the launch ends with an error.
// Needs cuda_host.h first.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include "fiber.h"

namespace gpucnn_emu {

constexpr unsigned max_threads = 1024;
// Big enough for -O0 builds with local arrays; pages are only committed when touched.
constexpr size_t stack_bytes = 256 * 1024;
// The largest dynamic shared memory a launch may ask for without an opt-in on a GPU.
constexpr size_t max_dynamic_shared_bytes = 48 * 1024;

struct Fiber {
    Context context;
    void* stack;
    unsigned tid;  // linear index of the thread this fiber is running
};

enum class State : unsigned char { running, at_block_barrier, at_warp_barrier, exited };

inline Context scheduler;
inline Fiber* current = nullptr;   // the fiber running now; null outside a block
inline Fiber* pool[max_threads];   // reused by every block of every launch
inline unsigned pool_size = 0;
inline Fiber* releasing[max_threads];
inline unsigned next_thread = 0, threads_per_block = 0;
inline unsigned waiting_at_block = 0, waiting_at_warp = 0, exited = 0;
inline State state[max_threads];
inline unsigned warp_mask[max_threads];  // the mask a thread waits with at a warp barrier
inline Fiber* parked[max_threads];       // the fiber of each waiting thread
inline std::uint64_t slot[max_threads];  // values threads exchange at a barrier
inline void (*thread_body)(const void*) = nullptr;
inline const void* thread_closure = nullptr;
inline bool aborted = false;
inline char last_error[1024];
inline char last_check[32];                // which check ended the launch: "barrier", "race", ...
inline unsigned barrier_line[max_threads];  // the line of the __syncthreads a thread waits at
// Dynamic shared memory, with 256-byte redzones on both sides for the checking mode.
alignas(256) inline unsigned char shared_storage[256 + max_dynamic_shared_bytes + 256];
inline unsigned char* const shared_buffer = shared_storage + 256;
inline size_t shared_bytes = 0;

inline void* dynamic_shared() { return shared_buffer; }

// The kernel instance being launched, and the static shared memory it uses (at most 48 KiB,
// or ptxas refuses the kernel).
inline const void* launching = nullptr;
constexpr size_t max_static_shared_bytes = 48 * 1024;

// Every static __shared__ variable of the module: the emulator's rewrite of the source
// declares a SharedVariable after each (build.py), so that each block finds them all-ones,
// as it finds dynamic shared memory, instead of the previous block's values.
struct SharedVariableSlot {
    void* data;
    size_t size;
    const void* kernel;  // the kernel that first ran the declaration; null at namespace scope
};
inline SharedVariableSlot shared_variables[1024];
inline unsigned shared_variable_count = 0;
}  // namespace gpucnn_emu

#include "sanitizer.h"

namespace gpucnn_emu {

struct SharedVariable {
    // object: the variable with its redzones in the checking mode, else the variable itself.
    GPUCNN_EMU_RUNTIME SharedVariable(void* data, size_t size, [[maybe_unused]] void* object,
                                      [[maybe_unused]] size_t object_size, [[maybe_unused]] const char* name) {
        std::memset(data, 0xff, size);
        if (shared_variable_count < sizeof shared_variables / sizeof shared_variables[0])
            shared_variables[shared_variable_count++] = {data, size, current ? launching : nullptr};
#ifdef GPUCNN_EMU_SANITIZE
        add_shared_region(name, object, object_size, data, size);
#endif
    }
};

// The bytes of static shared memory the kernel being launched has declared so far.
GPUCNN_EMU_RUNTIME inline size_t static_shared_bytes() {
    size_t total = 0;
    for (unsigned i = 0; i < shared_variable_count; ++i)
        if (!shared_variables[i].kernel || shared_variables[i].kernel == launching) total += shared_variables[i].size;
    return total;
}

GPUCNN_EMU_RUNTIME inline void set_thread(unsigned tid) {
    threadIdx.x = tid % blockDim.x;
    threadIdx.y = (tid / blockDim.x) % blockDim.y;
    threadIdx.z = tid / (blockDim.x * blockDim.y);
}

GPUCNN_EMU_RUNTIME inline Fiber* new_fiber() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* memory = mmap(nullptr, stack_bytes + page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) return nullptr;
    mprotect(memory, page, PROT_NONE);  // guard page: a stack overflow faults, not corrupts
    return new Fiber{{}, static_cast<char*>(memory) + page, 0};
}

// Runs threads one after another until all have started, then goes back to the scheduler
// for good (the next block restarts the fiber from the top).
GPUCNN_EMU_RUNTIME inline void fiber_main() {
    Fiber* self = current;
    while (next_thread < threads_per_block && !aborted) {
        self->tid = next_thread++;
        set_thread(self->tid);
        thread_body(thread_closure);
        state[self->tid] = State::exited;
        ++exited;
    }
    switch_context(self->context, scheduler);
    __builtin_unreachable();
}

GPUCNN_EMU_RUNTIME inline void resume(Fiber* f) {
    current = f;
    set_thread(f->tid);
    switch_context(scheduler, f->context);
    current = nullptr;
}

GPUCNN_EMU_RUNTIME inline void wait(State at) {
    Fiber* self = current;
    state[self->tid] = at;
    parked[self->tid] = self;
    switch_context(self->context, scheduler);
}

// `line`: the source line of the __syncthreads, which the checking mode compares.
GPUCNN_EMU_RUNTIME inline void block_barrier(unsigned line) {
    barrier_line[current->tid] = line;
    ++waiting_at_block;
    wait(State::at_block_barrier);
}

GPUCNN_EMU_RUNTIME inline void warp_barrier(unsigned mask) {
    warp_mask[current->tid] = mask;
    ++waiting_at_warp;
    wait(State::at_warp_barrier);
}

// Ends the launch (last_error says why); the calling fiber is never resumed.
[[noreturn]] GPUCNN_EMU_RUNTIME inline void abort_launch() {
    aborted = true;
    switch_context(current->context, scheduler);
    __builtin_unreachable();
}

[[noreturn]] GPUCNN_EMU_RUNTIME inline void fail(const char* check, const char* message) {
    std::snprintf(last_check, sizeof last_check, "%s", check);
    std::snprintf(last_error, sizeof last_error, "%s in block (%u, %u, %u), thread (%u, %u, %u)", message,
                  blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    abort_launch();
}

// Ends the launch of a kernel declared __launch_bounds__(max_threads) with a bigger block:
// a GPU refuses such a launch ("too many resources requested for launch").
GPUCNN_EMU_RUNTIME inline void check_launch_bounds(unsigned long long max_threads) {
    if (threads_per_block <= max_threads) return;
    char message[256];
    std::snprintf(message, sizeof message,
                  "launch: a block of %u threads exceeds the kernel's __launch_bounds__(%llu), so a GPU "
                  "refuses the launch (too many resources requested)",
                  threads_per_block, max_threads);
    fail("launch", message);
}

// The checking mode's synccheck, as a barrier opens (in the scheduler, between threads):
// `at_block` for __syncthreads, else the warp starting at thread `first`, whose waiting lanes
// named `needed` of which `gone` exited. False, with the launch ended, on a misuse.
GPUCNN_EMU_RUNTIME inline bool barrier_is_sound([[maybe_unused]] bool at_block, [[maybe_unused]] unsigned first,
                                                [[maybe_unused]] unsigned needed, [[maybe_unused]] unsigned gone) {
#ifdef GPUCNN_EMU_SANITIZE
    char who[96], other[96];
    if (!at_block) {
        if (!(needed & gone)) return true;
        unsigned t = first;
        while (state[t] != State::at_warp_barrier || !(warp_mask[t] & gone)) ++t;
        const unsigned lane = __builtin_ctz(warp_mask[t] & gone);
        describe_thread(who, sizeof who, block_serial, t);
        describe_thread(other, sizeof other, block_serial, first + lane);
        note("barrier",
             "barrier error: %s waits at a warp barrier (__syncwarp, shuffle or vote) with mask 0x%08x, which "
             "names lane %u, %s, that has exited",
             who, warp_mask[t], lane, other);
        return false;
    }
    unsigned t = 0;
    while (state[t] != State::at_block_barrier) ++t;
    for (unsigned u = 0; u < threads_per_block; ++u) {
        if (state[u] == State::at_block_barrier && barrier_line[u] == barrier_line[t]) continue;
        describe_thread(who, sizeof who, block_serial, t);
        describe_thread(other, sizeof other, block_serial, u);
        if (state[u] == State::exited)
            note("barrier",
                 "barrier error: __syncthreads on line %u is reached by %u of the block's %u threads: %s waits "
                 "there, but %s has exited (divergent threads in block)",
                 barrier_line[t], waiting_at_block, threads_per_block, who, other);
        else
            note("barrier",
                 "barrier error: %s waits at __syncthreads on line %u, but %s at the one on line %u (divergent "
                 "threads in block)",
                 who, barrier_line[t], other, barrier_line[u]);
        return false;
    }
    ++block_epoch;
#endif
    return true;
}

GPUCNN_EMU_RUNTIME inline void release(unsigned first, unsigned count, State at, unsigned& waiting) {
    unsigned n = 0;
    for (unsigned t = first; t < first + count; ++t)
        if (state[t] == at) {
            state[t] = State::running;
            --waiting;
            releasing[n++] = parked[t];
        }
#ifdef GPUCNN_EMU_SANITIZE
    if (at == State::at_warp_barrier) {
        unsigned lanes = 0;
        for (unsigned i = 0; i < n; ++i) lanes |= 1u << (releasing[i]->tid - first);
        warp_synced(first, lanes);
    }
#endif
    for (unsigned i = 0; i < n && !aborted; ++i) resume(releasing[i]);
}

// Opens one barrier that every thread it waits for has reached; false when none can open.
GPUCNN_EMU_RUNTIME inline bool open_a_barrier() {
    for (unsigned first = 0; waiting_at_warp > 0 && first < threads_per_block; first += warpSize) {
        const unsigned lanes = threads_per_block - first < warpSize ? threads_per_block - first : warpSize;
        unsigned waiting = 0, gone = 0, needed = 0;
        for (unsigned lane = 0; lane < lanes; ++lane) {
            State s = state[first + lane];
            if (s == State::at_warp_barrier) waiting |= 1u << lane, needed |= warp_mask[first + lane];
            if (s == State::exited) gone |= 1u << lane;
        }
        const unsigned existing = lanes == 32 ? ~0u : (1u << lanes) - 1;
        if (waiting && (needed & existing & ~(waiting | gone)) == 0) {
            if (barrier_is_sound(false, first, needed, gone))
                release(first, lanes, State::at_warp_barrier, waiting_at_warp);
            return true;
        }
    }
    if (waiting_at_block > 0 && waiting_at_block + exited == threads_per_block) {
        if (barrier_is_sound(true, 0, 0, 0))
            release(0, threads_per_block, State::at_block_barrier, waiting_at_block);
        return true;
    }
    return false;
}

GPUCNN_EMU_RUNTIME inline bool run_block() {
    next_thread = 0;
    waiting_at_block = waiting_at_warp = exited = 0;
    for (unsigned t = 0; t < threads_per_block; ++t) state[t] = State::running;
    // Uninitialized shared memory, and a shuffle from a lane that does not exist, read as
    // all-ones bytes (NaN, -1), so a kernel that relies on them shows it.
    std::memset(shared_buffer, 0xff, shared_bytes);
    for (unsigned i = 0; i < shared_variable_count; ++i)
        std::memset(shared_variables[i].data, 0xff, shared_variables[i].size);
    std::memset(slot, 0xff, (threads_per_block + warpSize - 1) / warpSize * warpSize * sizeof slot[0]);
    unsigned used = 0;  // at most one fiber per thread
    while (next_thread < threads_per_block && !aborted) {
        if (used == pool_size) {
            pool[pool_size] = new_fiber();
            if (!pool[pool_size]) {
                std::snprintf(last_error, sizeof last_error, "could not allocate a fiber stack");
                return false;
            }
            ++pool_size;
        }
        Fiber* f = pool[used++];
        start_context(f->context, f->stack, stack_bytes, fiber_main);
        current = f;
        switch_context(scheduler, f->context);
        current = nullptr;
    }
    while (waiting_at_block + waiting_at_warp > 0 && !aborted) {
        if (!open_a_barrier()) {
            unsigned t = 0;
            while (t + 1 < threads_per_block && state[t] != State::at_warp_barrier) ++t;
            set_thread(t);
            std::snprintf(last_check, sizeof last_check, "barrier");
            std::snprintf(last_error, sizeof last_error,
                          "barrier deadlock in block (%u, %u, %u): %u threads wait at __syncthreads while %u "
                          "wait at a warp barrier (__syncwarp, shuffle or vote), the first being thread "
                          "(%u, %u, %u) with mask 0x%08x",
                          blockIdx.x, blockIdx.y, blockIdx.z, waiting_at_block, waiting_at_warp, threadIdx.x,
                          threadIdx.y, threadIdx.z, warp_mask[t]);
            return false;
        }
    }
    return !aborted;
}

// Every participating lane stores a value, all meet, each reads, all meet again so that no
// lane overwrites its slot before the others have read it.
template <class T>
GPUCNN_EMU_RUNTIME T shuffle(unsigned mask, T value, bool valid, unsigned source_lane) {
    static_assert(sizeof(T) <= sizeof(std::uint64_t) && std::is_trivially_copyable_v<T>,
                  "the CUDA emulator shuffles values of at most 8 bytes");
    const unsigned warp_first = current->tid & ~(warpSize - 1u);
    std::memcpy(&slot[current->tid], &value, sizeof(T));
    warp_barrier(mask);
    T result = value;
    if (valid) std::memcpy(&result, &slot[warp_first + source_lane], sizeof(T));
    warp_barrier(mask);
    return result;
}

GPUCNN_EMU_RUNTIME inline unsigned lane_id() { return current->tid % warpSize; }

// The bit of each lane in `mask` whose predicate was non-zero.
GPUCNN_EMU_RUNTIME inline unsigned ballot(unsigned mask, int predicate) {
    const unsigned warp_first = current->tid & ~(warpSize - 1u);
    slot[current->tid] = predicate != 0;
    warp_barrier(mask);
    unsigned bits = 0;
    for (unsigned lane = 0; lane < warpSize && warp_first + lane < threads_per_block; ++lane)
        if ((mask >> lane & 1u) && slot[warp_first + lane] == 1) bits |= 1u << lane;
    warp_barrier(mask);
    return bits;
}

// How many threads of the block passed a non-zero predicate to this barrier.
GPUCNN_EMU_RUNTIME inline int count_at_block_barrier(int predicate, unsigned line) {
    slot[current->tid] = predicate != 0;
    block_barrier(line);
    int count = 0;
    for (unsigned t = 0; t < threads_per_block; ++t)
        if (state[t] != State::exited && slot[t] == 1) ++count;
    block_barrier(line);
    return count;
}

}  // namespace gpucnn_emu

// Macros, so that each barrier knows its source line (the checking mode compares them).
#define __syncthreads() ::gpucnn_emu::block_barrier(__LINE__)
#define __syncthreads_count(predicate) ::gpucnn_emu::count_at_block_barrier((predicate), __LINE__)
#define __syncthreads_and(predicate) \
    (::gpucnn_emu::count_at_block_barrier((predicate), __LINE__) == ::gpucnn_emu::count_at_block_barrier(1, __LINE__))
#define __syncthreads_or(predicate) (::gpucnn_emu::count_at_block_barrier((predicate), __LINE__) > 0)
GPUCNN_EMU_RUNTIME inline void __syncwarp(unsigned mask = 0xffffffffu) { gpucnn_emu::warp_barrier(mask); }

template <class T>
GPUCNN_EMU_RUNTIME T __shfl_sync(unsigned mask, T value, int source, int width = warpSize) {
    const unsigned lane = gpucnn_emu::lane_id();
    return gpucnn_emu::shuffle(mask, value, true, (lane & ~(width - 1)) | (source & (width - 1)));
}
template <class T>
GPUCNN_EMU_RUNTIME T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = warpSize) {
    const unsigned lane = gpucnn_emu::lane_id();
    return gpucnn_emu::shuffle(mask, value, (lane & (width - 1)) >= delta, lane - delta);
}
template <class T>
GPUCNN_EMU_RUNTIME T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = warpSize) {
    const unsigned lane = gpucnn_emu::lane_id();
    return gpucnn_emu::shuffle(mask, value, (lane & (width - 1)) + delta < unsigned(width), lane + delta);
}
template <class T>
GPUCNN_EMU_RUNTIME T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize) {
    const unsigned lane = gpucnn_emu::lane_id(), source = lane ^ lane_mask;
    return gpucnn_emu::shuffle(mask, value, (source & ~(width - 1)) == (lane & ~(width - 1)), source);
}
GPUCNN_EMU_RUNTIME inline unsigned __ballot_sync(unsigned mask, int predicate) { return gpucnn_emu::ballot(mask, predicate); }
GPUCNN_EMU_RUNTIME inline int __any_sync(unsigned mask, int predicate) { return gpucnn_emu::ballot(mask, predicate) != 0; }
GPUCNN_EMU_RUNTIME inline int __all_sync(unsigned mask, int predicate) {
    return gpucnn_emu::ballot(mask, predicate) == gpucnn_emu::ballot(mask, 1);
}
