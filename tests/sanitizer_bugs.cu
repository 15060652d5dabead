// Small, deliberately wrong kernels: each has one bug of a class that the emulator's checking
// mode must report (tests/test_sanitizer.py), and that NVIDIA's compute-sanitizer reports on a
// GPU (scripts/sanitizer_bugs.py). The first word of each comment names the check. No
// #include: the same text compiles with NVRTC, nvcc and the emulator.

// out-of-bounds: n is one more than the arrays hold.
extern "C" __global__ void __launch_bounds__(256) read_past_end(const float* x, float* y, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i < n - 1 ? i : 0] = x[i];
}

// out-of-bounds: a wild index, a gigabyte past the array.
extern "C" __global__ void __launch_bounds__(256) read_far_away(const float* x, float* y)
{
    y[threadIdx.x] = x[threadIdx.x + (1ll << 28)];
}

// out-of-bounds: n is one more than y holds.
extern "C" __global__ void __launch_bounds__(256) write_past_end(const float* x, float* y, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = x[i < n - 1 ? i : 0];
}

// out-of-bounds: a 33-thread block indexes a 32-element shared array.
extern "C" __global__ void __launch_bounds__(64) shared_past_end(const float* x, float* y)
{
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x];
}

// out-of-bounds: dynamic shared memory indexed past the launch's shared_mem (blockDim floats).
extern "C" __global__ void __launch_bounds__(64) dynamic_shared_past_end(float* y)
{
    extern __shared__ float buffer[];
    buffer[threadIdx.x + 1] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = buffer[threadIdx.x];
}

// misaligned: float4 loads from x + 1, an address 4 bytes past a 16-byte boundary.
extern "C" __global__ void __launch_bounds__(64) misaligned_float4(const float* x, float* y)
{
    const float4 v = reinterpret_cast<const float4*>(x + 1)[threadIdx.x];
    y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// misaligned: float2 loads from x + 1.
extern "C" __global__ void __launch_bounds__(64) misaligned_float2(const float* x, float* y)
{
    const float2 v = reinterpret_cast<const float2*>(x + 1)[threadIdx.x];
    y[threadIdx.x] = v.x + v.y;
}

// misaligned: a double read 4 bytes into an 8-byte slot.
extern "C" __global__ void __launch_bounds__(64) misaligned_double(const float* x, double* y)
{
    y[threadIdx.x] = *reinterpret_cast<const double*>(x + 1 + 2 * threadIdx.x);
}

// race: each thread reads its lower neighbour's slot with no barrier in between.
extern "C" __global__ void __launch_bounds__(64) neighbour_without_barrier(const float* x, float* y)
{
    __shared__ float s[64];
    s[threadIdx.x] = x[threadIdx.x];
    y[threadIdx.x] = threadIdx.x > 0 ? s[threadIdx.x - 1] : 0.0f;
}

// race: a tiled sum whose loop lacks its trailing __syncthreads, so the next tile's stores
// overwrite what other threads are still reading.
extern "C" __global__ void __launch_bounds__(64) tile_loop_missing_barrier(const float* x, float* y, int tiles)
{
    __shared__ float tile[64];
    float sum = 0.0f;
    for (int t = 0; t < tiles; ++t) {
        tile[threadIdx.x] = x[t * blockDim.x + threadIdx.x];
        __syncthreads();
        for (int k = 0; k < (int)blockDim.x; ++k)
            sum += tile[k];
    }
    y[threadIdx.x] = sum;
}

// race: a tree reduction without the barrier between its levels.
extern "C" __global__ void __launch_bounds__(64) tree_missing_barrier(const float* x, float* y)
{
    __shared__ float s[64];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2)
        if (threadIdx.x < half)
            s[threadIdx.x] += s[threadIdx.x + half];
    if (threadIdx.x == 0)
        y[0] = s[0];
}

// race: the pre-Volta warp-synchronous last steps of a reduction (volatile, no __syncwarp).
extern "C" __global__ void __launch_bounds__(64) warp_synchronous_reduction(const float* x, float* y)
{
    __shared__ float s[64];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x < 32) {
        volatile float* v = s;
        v[threadIdx.x] += v[threadIdx.x + 32];
        v[threadIdx.x] += v[threadIdx.x + 16];
        v[threadIdx.x] += v[threadIdx.x + 8];
        v[threadIdx.x] += v[threadIdx.x + 4];
        v[threadIdx.x] += v[threadIdx.x + 2];
        v[threadIdx.x] += v[threadIdx.x + 1];
    }
    if (threadIdx.x == 0)
        y[0] = s[0];
}

// race: block 1 reads what block 0 writes in the same launch.
extern "C" __global__ void __launch_bounds__(64) reads_another_blocks_output(float* y)
{
    if (blockIdx.x == 0)
        y[threadIdx.x] = 1.0f;
    else
        y[blockDim.x + threadIdx.x] = y[threadIdx.x] + 1.0f;
}

// race: every thread increments one counter without an atomic.
extern "C" __global__ void __launch_bounds__(1024) counter_without_atomic(float* y)
{
    y[0] += 1.0f;
}

// uninitialized: half of a shared tile is never written, and flows through fmaxf.
extern "C" __global__ void __launch_bounds__(64) unwritten_shared_through_fmaxf(const float* x, float* y)
{
    __shared__ float tile[64];
    if (threadIdx.x < 32)
        tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = fmaxf(tile[threadIdx.x], 0.0f);
}

// uninitialized: an unwritten shared int decides a comparison.
extern "C" __global__ void __launch_bounds__(64) unwritten_shared_int(int* y)
{
    __shared__ int count;
    if (threadIdx.x == 1)
        y[0] = count > 0;
}

// uninitialized: copies y into z; the test passes a y that no kernel has written.
extern "C" __global__ void __launch_bounds__(64) copy(const float* y, float* z)
{
    z[threadIdx.x] = y[threadIdx.x];
}

// barrier: __syncthreads at two different lines in divergent branches.
extern "C" __global__ void __launch_bounds__(64) divergent_barriers(float* y)
{
    if (threadIdx.x % 2 == 0) {
        y[threadIdx.x] = 1.0f;
        __syncthreads();
    } else {
        y[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}

// barrier: threads past n return early; the rest wait at a __syncthreads they never reach.
extern "C" __global__ void __launch_bounds__(64) barrier_after_early_return(const float* x, float* y, int n)
{
    __shared__ float s[64];
    if ((int)threadIdx.x >= n)
        return;
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = s[n - 1 - threadIdx.x];
}

// barrier: the full-warp mask of a shuffle names lanes 16-31, which have exited.
extern "C" __global__ void __launch_bounds__(32) shuffle_with_exited_lanes(const float* x, float* y)
{
    if (threadIdx.x >= 16)
        return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, x[threadIdx.x], 1);
}

// launch: declared for at most 128 threads; the test launches 256.
extern "C" __global__ void __launch_bounds__(128) bounded_to_128(float* y)
{
    y[threadIdx.x] = 1.0f;
}
