// The checking mode (GPUCNN_EMULATOR_SANITIZE=1): every load and store of the kernel code is
// checked before it happens, as NVIDIA's compute-sanitizer (memcheck, racecheck, initcheck,
// synccheck) and Oclgrind check them on a GPU or in a simulator.
//
// How the accesses are seen: the kernel source is compiled with GCC's -fsanitize=thread,
// which calls __tsan_read4(address) before a 4-byte load, __tsan_write8 before an 8-byte
// store, and so on. Those functions are defined here (libtsan is never linked): each finds the
// memory the address belongs to and checks it.
// - Global memory: each pointer argument's array, copied by Python into a buffer of its own
//   with redzones on both sides (aliasing arguments share one), so that an access past the
//   end lands in a redzone, never in a neighbouring array. Static __shared__ arrays get
//   redzones too (build.py), and dynamic shared memory is checked against the launch's
//   shared_mem. An address in none of them, the module's own data (threadIdx, constants) or
//   the thread's stack is reported before it is used: a wild pointer never segfaults.
// - A shadow of every checked byte says whether it was written (initcheck), and a shadow of
//   every 4-byte granule keeps its last write and two last reads: which block and thread,
//   in which barrier interval (racecheck). Two accesses of different threads race unless a
//   barrier orders them: a __syncthreads of their block in between, or, for two lanes of one
//   warp, a warp barrier (__syncwarp, shuffle, vote) that both passed. Threads of different
//   blocks are never ordered within a launch. Both accesses atomic is no race. Because the
//   check compares barrier intervals, not the order the emulator happens to run threads in,
//   it finds the hazards of any schedule.
// - Barriers (block.h) report a __syncthreads reached by part of a block or at different
//   lines, and a warp mask naming lanes that have exited.
// Needs cuda_host.h and the scheduler state of block.h first.
#pragma once

#ifdef GPUCNN_EMU_SANITIZE

#include <dlfcn.h>
#include <link.h>

#include <cstdarg>
#include <cstdlib>

namespace gpucnn_emu {

[[noreturn]] void abort_launch();

enum Access : unsigned char { read_access, write_access, atomic_access };

// One access, as the race check needs it: 16 bytes.
struct Record {
    std::uint32_t block;       // serial number of the block within the launch
    std::uint32_t epoch;       // __syncthreads the block had passed
    std::uint32_t warp_syncs;  // warp barriers the thread had passed
    std::uint16_t tid;         // linear thread index in the block
    std::uint8_t bytes;        // which bytes of the granule
    std::uint8_t flags;        // valid, atomic, write
};
constexpr std::uint8_t valid_flag = 1, atomic_flag = 2, write_flag = 4;
constexpr unsigned granule_bytes = 4;
struct Granule {
    Record write, read[2];
};

enum RegionKind : int { argument_region, shared_region, dynamic_shared_region };

// Memory the kernel may touch: data plus the redzones around it (lo..hi).
struct Region {
    const char* name;
    unsigned char* lo;
    unsigned char* data;
    std::size_t size;
    unsigned char* hi;
    unsigned char* written;  // one byte per data byte: 1 once written
    Granule* granules;
    RegionKind kind;
};

constexpr unsigned max_argument_regions = 64;
inline Region argument_regions[max_argument_regions];
inline unsigned argument_region_count = 0;

// Scheduler facts the checks need (block.h keeps them current).
inline std::uint32_t block_serial = 0, block_epoch = 0;
inline std::uint32_t warp_syncs[max_threads];
// joint[t][u]: warp_syncs[t] after the last warp barrier that lanes t and u passed together.
inline std::uint32_t joint[max_threads][warpSize];
inline std::uintptr_t last_pc = 0;  // the access's offset in this library, for addr2line

GPUCNN_EMU_RUNTIME inline void describe_thread(char* out, std::size_t size, std::uint32_t block, unsigned tid) {
    const unsigned bx = block % gridDim.x, by = block / gridDim.x % gridDim.y, bz = block / gridDim.x / gridDim.y;
    const unsigned tx = tid % blockDim.x, ty = tid / blockDim.x % blockDim.y, tz = tid / (blockDim.x * blockDim.y);
    std::snprintf(out, size, "block (%u, %u, %u) thread (%u, %u, %u)", bx, by, bz, tx, ty, tz);
}

// Sets the report of `check` that ends the launch.
GPUCNN_EMU_RUNTIME inline void note(const char* check, const void* pc, const char* format, va_list args) {
    std::snprintf(last_check, sizeof last_check, "%s", check);
    Dl_info info;
    last_pc = pc && dladdr(pc, &info) ? reinterpret_cast<std::uintptr_t>(pc) - 1 -
                                            reinterpret_cast<std::uintptr_t>(info.dli_fbase)
                                      : 0;
    std::vsnprintf(last_error, sizeof last_error, format, args);
    aborted = true;
}

GPUCNN_EMU_RUNTIME inline void note(const char* check, const char* format, ...) {
    va_list args;
    va_start(args, format);
    note(check, nullptr, format, args);
    va_end(args);
}

// Ends the launch from a kernel thread with a report of `check`; the access that caused it
// never happens.
[[noreturn]] GPUCNN_EMU_RUNTIME inline void report(const char* check, const void* pc, const char* format, ...) {
    va_list args;
    va_start(args, format);
    note(check, pc, format, args);
    va_end(args);
    abort_launch();
}

// --- Where an address belongs.

struct Image {
    std::uintptr_t lo = 0, hi = 0;
};

GPUCNN_EMU_RUNTIME inline int find_image(dl_phdr_info* info, std::size_t, void* data) {
    auto* image = static_cast<Image*>(data);
    const auto base = static_cast<std::uintptr_t>(info->dlpi_addr);
    std::uintptr_t lo = ~std::uintptr_t(0), hi = 0;
    for (int i = 0; i < info->dlpi_phnum; ++i)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            const std::uintptr_t start = base + info->dlpi_phdr[i].p_vaddr, end = start + info->dlpi_phdr[i].p_memsz;
            lo = start < lo ? start : lo;
            hi = end > hi ? end : hi;
        }
    const auto probe = reinterpret_cast<std::uintptr_t>(&block_serial);
    if (lo <= probe && probe < hi) {
        image->lo = lo, image->hi = hi;
        return 1;
    }
    return 0;
}

// This library's own memory: the scheduler's variables (threadIdx, ...), string literals,
// __constant__ tables. Kernel code reads them freely.
GPUCNN_EMU_RUNTIME inline const Image& own_image() {
    static Image image;
    if (!image.hi) dl_iterate_phdr(find_image, &image);
    return image;
}

struct SharedRegions {
    Region regions[1024];
    unsigned count = 0;
};
inline SharedRegions shared_regions;
inline unsigned char dynamic_written[max_dynamic_shared_bytes];
inline Granule dynamic_granules[max_dynamic_shared_bytes / granule_bytes + 1];
inline Region dynamic_region{"dynamic shared memory (extern __shared__)", shared_storage, shared_buffer, 0,
                             shared_storage + sizeof shared_storage, dynamic_written, dynamic_granules,
                             dynamic_shared_region};

GPUCNN_EMU_RUNTIME inline Region* lookup_region(const unsigned char* a) {
    for (unsigned i = 0; i < argument_region_count; ++i)
        if (argument_regions[i].lo <= a && a < argument_regions[i].hi) return &argument_regions[i];
    if (dynamic_region.lo <= a && a < dynamic_region.hi) return &dynamic_region;
    for (unsigned i = 0; i < shared_regions.count; ++i)
        if (shared_regions.regions[i].lo <= a && a < shared_regions.regions[i].hi) return &shared_regions.regions[i];
    return nullptr;
}

// The region of each recently touched 256-byte chunk of memory, direct-mapped: a lookup is a
// few instructions instead of a walk over every region. `generation` changes whenever the
// regions do (every launch), which empties the cache at once.
struct CachedRegion {
    std::uintptr_t chunk;
    Region* region;
    std::uint32_t generation;
};
inline CachedRegion region_cache[4096];
inline std::uint32_t region_generation = 1;

GPUCNN_EMU_RUNTIME inline Region* find_region(const unsigned char* a) {
    const std::uintptr_t chunk = reinterpret_cast<std::uintptr_t>(a) >> 8;
    CachedRegion& cached = region_cache[chunk % 4096];
    // A chunk may hold the ends of two regions: the cached one must contain a itself.
    if (cached.generation == region_generation && cached.chunk == chunk && cached.region->lo <= a &&
        a < cached.region->hi)
        return cached.region;
    Region* r = lookup_region(a);
    if (r) cached = {chunk, r, region_generation};
    return r;
}

// threadIdx, blockIdx, blockDim, gridDim: registers on a GPU, read all the time.
template <class T>
GPUCNN_EMU_RUNTIME inline bool within(const unsigned char* a, const T& variable) {
    return reinterpret_cast<const unsigned char*>(&variable) <= a && a < reinterpret_cast<const unsigned char*>(&variable + 1);
}

// "byte 4100 of argument 1 (y), which holds 4096 bytes". A wild address belongs to no buffer,
// and which pointer it came from is unknown: it is given as an offset into every argument.
GPUCNN_EMU_RUNTIME inline void describe_address(char* out, std::size_t size, const unsigned char* a, const Region* r) {
    if (r) {
        std::snprintf(out, size, "byte %lld of %s, which holds %zu bytes", static_cast<long long>(a - r->data),
                      r->name, r->size);
        return;
    }
    int used = std::snprintf(out, size, "address %p, in no buffer of this launch", static_cast<const void*>(a));
    for (unsigned i = 0; i < argument_region_count && used > 0 && static_cast<std::size_t>(used) < size; ++i) {
        const Region& c = argument_regions[i];
        used += std::snprintf(out + used, size - used, "%s byte %lld of %s (%zu bytes)", i ? "," : ":",
                              static_cast<long long>(a - c.data), c.name, c.size);
    }
}

// --- The checks.

GPUCNN_EMU_RUNTIME inline bool ordered(const Record& r, unsigned tid) {
    if (r.block != block_serial) return false;
    if (r.epoch != block_epoch) return true;  // a __syncthreads in between
    return r.tid / warpSize == tid / warpSize && joint[r.tid][tid % warpSize] > r.warp_syncs;
}

GPUCNN_EMU_RUNTIME inline bool conflicts(const Record& r, const Record& me) {
    return (r.flags & valid_flag) && (r.bytes & me.bytes) && !(r.block == me.block && r.tid == me.tid) &&
           !((r.flags & atomic_flag) && (me.flags & atomic_flag)) && !ordered(r, me.tid);
}

// A record may absorb my access when it is mine, from this barrier interval.
GPUCNN_EMU_RUNTIME inline bool mine(const Record& r, const Record& me) {
    return (r.flags & valid_flag) && r.block == me.block && r.tid == me.tid && r.epoch == me.epoch &&
           r.warp_syncs == me.warp_syncs;
}

[[noreturn]] GPUCNN_EMU_RUNTIME inline void report_race(const Record& other, const Record& me, const char* hazard,
                                                          const unsigned char* a, const Region* r, const void* pc) {
    char where[256], mine_[96], theirs[96];
    describe_address(where, sizeof where, a, r);
    describe_thread(mine_, sizeof mine_, me.block, me.tid);
    describe_thread(theirs, sizeof theirs, other.block, other.tid);
    const char* verb = me.flags & atomic_flag ? "atomically updates" : (me.flags & write_flag ? "writes" : "reads");
    const char* other_verb = other.flags & atomic_flag ? "atomically updated"
                                                        : (other.flags & write_flag ? "wrote" : "read");
    const char* why = other.block != me.block ? "threads of different blocks are never ordered within a launch"
                      : other.tid / warpSize == me.tid / warpSize
                          ? "no __syncthreads, nor a __syncwarp (shuffle, vote) of both lanes, in between"
                          : "no __syncthreads in between";
    report("race", pc, "race (%s hazard) at %s: %s %s it, and %s %s it (%s)", hazard, where, mine_, verb, theirs,
           other_verb, why);
}

GPUCNN_EMU_RUNTIME inline void check_granule(Granule& g, const Record& me, Access access, const unsigned char* a,
                                              const Region* r, const void* pc) {
    if (conflicts(g.write, me))
        report_race(g.write, me, access == read_access ? "read-after-write" : "write-after-write", a, r, pc);
    if (access != read_access)
        for (const Record& read : g.read)
            if (conflicts(read, me)) report_race(read, me, "write-after-read", a, r, pc);
    if (access == read_access) {  // keep the reads of two threads; a third may be missed, never invented
        Record* slot = &g.read[1];
        if (mine(g.read[0], me) || !(g.read[0].flags & valid_flag) || ordered(g.read[0], me.tid)) slot = &g.read[0];
        if (mine(g.read[1], me)) slot = &g.read[1];
        const std::uint8_t bytes = mine(*slot, me) ? slot->bytes : 0;
        *slot = me;
        slot->bytes |= bytes;
    } else {
        const std::uint8_t bytes = mine(g.write, me) ? g.write.bytes : 0;
        g.write = me;
        g.write.bytes |= bytes;
        g.read[0].flags = g.read[1].flags = 0;  // each either ordered before me or reported
    }
}

GPUCNN_EMU_RUNTIME inline void check_access(const void* p, std::size_t size, Access access, const void* pc,
                                            bool natural) {
    if (!current || size == 0) return;  // not kernel code: static initialisation
    const auto* a = static_cast<const unsigned char*>(p);
    // The thread's own stack (locals the compiler keeps in memory) is not checked: most
    // accesses of kernel code land there, so this test comes first.
    const auto* stack = static_cast<const unsigned char*>(current->stack);
    if ((stack <= a && a < stack + stack_bytes) || within(a, threadIdx) || within(a, blockIdx) ||
        within(a, blockDim) || within(a, gridDim))
        return;
    const auto address = reinterpret_cast<std::uintptr_t>(a);
    Region* r = find_region(a);
    const char* what = access == read_access ? "read" : access == write_access ? "write" : "atomic update";
    char where[256], who[96];
    if (natural && (address & (size - 1)) != 0) {  // size is 1, 2, 4, 8 or 16
        describe_address(where, sizeof where, a, r);
        describe_thread(who, sizeof who, block_serial, current->tid);
        report("misaligned", pc, "misaligned %s of %zu bytes at %s: the address is not a multiple of %zu (%s)", what,
               size, where, size, who);
    }
    if (!r || a < r->data || a + size > r->data + r->size) {
        if (!r) {
            const Image& image = own_image();
            if (image.lo <= address && address + size <= image.hi) return;
        }
        describe_address(where, sizeof where, a, r);
        describe_thread(who, sizeof who, block_serial, current->tid);
        report("out-of-bounds", pc, "out-of-bounds %s of %zu bytes at %s (%s)", what, size, where, who);
    }
    const std::size_t offset = a - r->data;
    if (access != write_access)
        for (std::size_t i = 0; i < size; ++i)
            if (!r->written[offset + i]) {
                describe_address(where, sizeof where, a + i, r);
                describe_thread(who, sizeof who, block_serial, current->tid);
                report("uninitialized", pc, "uninitialized %s of %zu bytes at %s: never written %s (%s)", what, size,
                       where, r->kind == argument_region ? "by the host or a kernel" : "in this block", who);
            }
    if (access != read_access) std::memset(r->written + offset, 1, size);
    const unsigned tid = current->tid;
    Record me{block_serial, block_epoch, warp_syncs[tid], static_cast<std::uint16_t>(tid), 0,
              static_cast<std::uint8_t>(valid_flag | (access == atomic_access ? atomic_flag | write_flag : 0) |
                                        (access == write_access ? write_flag : 0))};
    for (std::size_t g = offset / granule_bytes; g * granule_bytes < offset + size; ++g) {
        // The runtime calls nothing instrumented (std::min is), or a check would check itself.
        const std::size_t first = offset > g * granule_bytes ? offset : g * granule_bytes;
        const std::size_t last = offset + size < (g + 1) * granule_bytes ? offset + size : (g + 1) * granule_bytes;
        me.bytes = static_cast<std::uint8_t>(((1u << (last - first)) - 1) << (first - g * granule_bytes));
        check_granule(r->granules[g], me, access, a, r, pc);
    }
}

// --- Shared memory: each static __shared__ variable sits in a Redzoned object (build.py),
// registered on first use; its shadows are cleared with it at the start of every block.

template <class T>
struct Redzoned {
    alignas(256) unsigned char before[256];
    T value;
    alignas(256) unsigned char after[256];
};

GPUCNN_EMU_RUNTIME inline void add_shared_region(const char* name, void* object, std::size_t object_size, void* data,
                                                 std::size_t size) {
    if (shared_regions.count == sizeof shared_regions.regions / sizeof shared_regions.regions[0]) return;
    auto* written = static_cast<unsigned char*>(std::calloc(size ? size : 1, 1));
    auto* granules = static_cast<Granule*>(std::calloc(size / granule_bytes + 1, sizeof(Granule)));
    auto* lo = static_cast<unsigned char*>(object);
    shared_regions.regions[shared_regions.count++] = {
        name, lo, static_cast<unsigned char*>(data), size, lo + object_size, written, granules, shared_region};
    ++region_generation;
}

// At the start of every block: shared memory unwritten, no accesses recorded, no barrier passed.
GPUCNN_EMU_RUNTIME inline void start_block_checks(std::uint32_t serial, unsigned threads) {
    block_serial = serial;
    block_epoch = 0;
    std::memset(warp_syncs, 0, threads * sizeof warp_syncs[0]);
    std::memset(joint, 0, threads * sizeof joint[0]);
    for (Region* r = shared_regions.regions; r < shared_regions.regions + shared_regions.count; ++r) {
        std::memset(r->written, 0, r->size);
        std::memset(r->granules, 0, (r->size / granule_bytes + 1) * sizeof(Granule));
    }
    std::memset(dynamic_written, 0, shared_bytes);
    std::memset(dynamic_granules, 0, (shared_bytes / granule_bytes + 1) * sizeof(Granule));
}

// A warp barrier released `lanes` (a mask) of the warp starting at thread `first`.
GPUCNN_EMU_RUNTIME inline void warp_synced(unsigned first, unsigned lanes) {
    for (unsigned t = 0; t < warpSize; ++t)
        if (lanes >> t & 1u) ++warp_syncs[first + t];
    for (unsigned t = 0; t < warpSize; ++t)
        if (lanes >> t & 1u)
            for (unsigned u = 0; u < warpSize; ++u)
                if (lanes >> u & 1u) joint[first + t][u] = warp_syncs[first + t];
}

}  // namespace gpucnn_emu

// The calls -fsanitize=thread puts before each access of the kernel code. The aligned forms
// are for accesses the compiler believes naturally aligned: CUDA requires it, so they are
// checked for it; __tsan_unaligned_* and *_range (packed data, memory the compiler copies
// in pieces) are not.
#define GPUCNN_EMU_TSAN_HOOKS(N)                                                                                      \
    extern "C" GPUCNN_EMU_RUNTIME void __tsan_read##N(void* p) {                                                    \
        gpucnn_emu::check_access(p, N, gpucnn_emu::read_access, __builtin_return_address(0), true);                   \
    }                                                                                                                 \
    extern "C" GPUCNN_EMU_RUNTIME void __tsan_write##N(void* p) {                                                   \
        gpucnn_emu::check_access(p, N, gpucnn_emu::write_access, __builtin_return_address(0), true);                  \
    }                                                                                                                 \
    extern "C" GPUCNN_EMU_RUNTIME void __tsan_unaligned_read##N(void* p) {                                          \
        gpucnn_emu::check_access(p, N, gpucnn_emu::read_access, __builtin_return_address(0), false);                  \
    }                                                                                                                 \
    extern "C" GPUCNN_EMU_RUNTIME void __tsan_unaligned_write##N(void* p) {                                         \
        gpucnn_emu::check_access(p, N, gpucnn_emu::write_access, __builtin_return_address(0), false);                 \
    }
GPUCNN_EMU_TSAN_HOOKS(1)
GPUCNN_EMU_TSAN_HOOKS(2)
GPUCNN_EMU_TSAN_HOOKS(4)
GPUCNN_EMU_TSAN_HOOKS(8)
GPUCNN_EMU_TSAN_HOOKS(16)
#undef GPUCNN_EMU_TSAN_HOOKS
extern "C" GPUCNN_EMU_RUNTIME void __tsan_read_range(void* p, unsigned long size) {
    gpucnn_emu::check_access(p, size, gpucnn_emu::read_access, __builtin_return_address(0), false);
}
extern "C" GPUCNN_EMU_RUNTIME void __tsan_write_range(void* p, unsigned long size) {
    gpucnn_emu::check_access(p, size, gpucnn_emu::write_access, __builtin_return_address(0), false);
}
extern "C" GPUCNN_EMU_RUNTIME void __tsan_init() {}
extern "C" GPUCNN_EMU_RUNTIME void __tsan_func_entry(void*) {}
extern "C" GPUCNN_EMU_RUNTIME void __tsan_func_exit() {}

#endif  // GPUCNN_EMU_SANITIZE
