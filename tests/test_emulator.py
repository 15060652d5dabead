"""The CUDA emulator runs real CUDA source on the CPU with CUDA's semantics, and refuses
every launch that a GPU would run wrongly (Python scalars, strides, wrong dtypes, empty grids)."""
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gpucnn.emulator import RawModule
from gpucnn.emulator import build

KERNELS = r"""
#include <cassert>

// One thread per element; no barrier, so each block runs as a plain loop.
extern "C" __global__ void saxpy(float a, const float* __restrict__ x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

// C = A @ B through TILE x TILE shared-memory tiles: wrong unless every thread of the block
// has written its tile entry before any thread reads the tile (__syncthreads).
template <typename T, int TILE>
__global__ void matmul_tiled(const T* A, const T* B, T* C, int M, int N, int K) {
    __shared__ T As[TILE][TILE];
    __shared__ T Bs[TILE][TILE];
    const int row = blockIdx.y * TILE + threadIdx.y;
    const int col = blockIdx.x * TILE + threadIdx.x;
    T acc = 0;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[threadIdx.y][threadIdx.x] = (row < M && k0 + threadIdx.x < K) ? A[row * K + k0 + threadIdx.x] : T(0);
        Bs[threadIdx.y][threadIdx.x] = (col < N && k0 + threadIdx.y < K) ? B[(k0 + threadIdx.y) * N + col] : T(0);
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

// Per-block sums by a tree reduction in dynamic shared memory (blockDim.x a power of two).
extern "C" __global__ void block_sum(const double* x, double* sums, int n) {
    extern __shared__ double partial[];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? x[i] : 0.0;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) sums[blockIdx.x] = partial[0];
}

// Writes every index a thread sees, at its place in a (gz, gy, gx, bz, by, bx, 6) array.
extern "C" __global__ void indices_3d(int* out) {
    const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    int* o = out + 6 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
    o[0] = blockIdx.z; o[1] = blockIdx.y; o[2] = blockIdx.x;
    o[3] = threadIdx.z; o[4] = threadIdx.y; o[5] = threadIdx.x;
}

// Per-block sums: shuffles sum each warp, then warp 0 sums the warps' sums.
extern "C" __global__ void warp_shuffle_sum(const float* x, float* sums, int n) {
    static __shared__ float warp_sums[32];  // the "static" of NVIDIA's samples
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
    float v = i < n ? x[i] : 0.0f;
    for (int offset = warpSize / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / warpSize ? warp_sums[lane] : 0.0f;
        for (int offset = warpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
        if (lane == 0) sums[blockIdx.x] = v;
    }
}

extern "C" __global__ void histogram(const int* x, int* counts, float* total, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicAdd(&counts[x[i]], 1);
        atomicAdd(total, 0.5f);
    }
}

// What each warp-level intrinsic gives every thread of a 64-thread block.
extern "C" __global__ void warp_intrinsics(int* out) {
    const int t = threadIdx.x, lane = t % warpSize, v = 100 + t;
    int* o = out + 7 * t;
    o[0] = __shfl_sync(0xffffffffu, v, 3, 8);
    o[1] = __shfl_up_sync(0xffffffffu, v, 1);
    o[2] = __shfl_down_sync(0xffffffffu, v, 2, 16);
    o[3] = __shfl_xor_sync(0xffffffffu, v, 5);
    o[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[5] = __syncthreads_count(t % 2 == 0 && t < 40);
    o[6] = __all_sync(0xffffffffu, t < 40);
}

// Reads the second half of a shared tile that no thread of the block writes.
extern "C" __global__ void read_unwritten_shared(float* out) {
    __shared__ float tile[64];
    __shared__ int count;
    if (threadIdx.x < 32) tile[threadIdx.x] = 1.0f;
    if (blockIdx.x == 1 && threadIdx.x == 0) count = 5;
    __syncthreads();
    out[blockIdx.x * 65 + threadIdx.x] = tile[threadIdx.x];
    if (threadIdx.x == 0) out[blockIdx.x * 65 + 64] = count;
}

extern "C" __global__ void mismatched_barriers(int* out) {
    if (threadIdx.x == 0) __syncwarp(); else __syncthreads();
    out[threadIdx.x] = 1;
}

extern "C" __global__ void checked_copy(const int* x, int* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        assert(x[i] >= 0);
        y[i] = x[i];
    }
}
"""
NAME_EXPRESSIONS = ("matmul_tiled<float, 8>", "matmul_tiled<double, 8>")


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path_factory.mktemp("emulator-cache")))
        mod = RawModule(code=KERNELS, options=("-std=c++17",), name_expressions=NAME_EXPRESSIONS)
        mod.get_function("saxpy")  # compiles now, inside the temporary cache
        yield mod


def test_elementwise_kernel(module):
    rng = np.random.default_rng(0)
    n = 1000  # not a multiple of the block
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    expected = np.float32(2.5) * x + y
    module.get_function("saxpy")((4,), (256,), (np.float32(2.5), x, y, np.int64(n)))
    np.testing.assert_array_equal(y, expected)


def check_tiled_matmul(module, dtype):
    rng = np.random.default_rng(1)
    M, N, K = 19, 13, 21  # none a multiple of the 8x8 tile
    A, B = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    C = np.zeros((M, N), dtype)
    c_type = {np.float32: "float", np.float64: "double"}[dtype]
    grid = ((N + 7) // 8, (M + 7) // 8)
    module.get_function(f"matmul_tiled<{c_type}, 8>")(grid, (8, 8), (A, B, C, np.int32(M), np.int32(N), np.int32(K)))
    np.testing.assert_allclose(C, A @ B, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_memory_tiled_matmul_template(module, dtype):
    check_tiled_matmul(module, dtype)


def test_block_reduction_in_dynamic_shared_memory(module):
    x = np.random.default_rng(2).standard_normal(1000)
    threads, blocks = 128, 8
    sums = np.zeros(blocks)
    module.get_function("block_sum")((blocks,), (threads,), (x, sums, np.int32(x.size)), shared_mem=threads * 8)
    expected = np.pad(x, (0, blocks * threads - x.size)).reshape(blocks, threads).sum(axis=1)
    np.testing.assert_allclose(sums, expected, rtol=1e-12)


def test_launches_from_several_python_threads_take_turns(module):
    x = np.random.default_rng(4).standard_normal(1000)
    expected = np.pad(x, (0, 24)).reshape(8, 128).sum(axis=1)

    def block_sums(_):
        sums = np.zeros(8)
        module.get_function("block_sum")((8,), (128,), (x, sums, np.int32(x.size)), shared_mem=128 * 8)
        return sums

    with ThreadPoolExecutor(4) as pool:
        for sums in pool.map(block_sums, range(32)):
            np.testing.assert_allclose(sums, expected, rtol=1e-12)


def test_3d_grid_and_block_indices(module):
    grid, block = (3, 2, 2), (4, 2, 3)  # (x, y, z), as CUDA orders them
    out = np.full((*grid[::-1], *block[::-1], 6), -1, np.int32)
    module.get_function("indices_3d")(grid, block, (out,))
    expected = np.stack(np.meshgrid(*(np.arange(s) for s in (*grid[::-1], *block[::-1])), indexing="ij"), axis=-1)
    np.testing.assert_array_equal(out, expected)


def check_warp_shuffle_sum(module):
    x = np.random.default_rng(3).integers(-50, 50, 1000).astype(np.float32)  # exact sums in any order
    threads, blocks = 256, 4
    sums = np.zeros(blocks, np.float32)
    module.get_function("warp_shuffle_sum")((blocks,), (threads,), (x, sums, np.int32(x.size)))
    np.testing.assert_array_equal(sums, np.pad(x, (0, 24)).reshape(blocks, threads).sum(axis=1))


def test_warp_shuffle_reduction(module):
    check_warp_shuffle_sum(module)


def test_atomics(module):
    x = np.random.default_rng(5).integers(0, 10, 1000).astype(np.int32)
    counts, total = np.zeros(10, np.int32), np.zeros(1, np.float32)
    module.get_function("histogram")(4, 256, (x, counts, total, np.int32(x.size)))
    np.testing.assert_array_equal(counts, np.bincount(x, minlength=10))
    assert total[0] == 500.0


def test_warp_intrinsics_match_cuda_definitions(module):
    out = np.zeros((64, 7), np.int32)
    module.get_function("warp_intrinsics")(1, 64, (out,))
    t = np.arange(64)
    lane, first = t % 32, t - t % 32
    v = 100 + t
    np.testing.assert_array_equal(out[:, 0], v[first + (lane & ~7) + 3])
    np.testing.assert_array_equal(out[:, 1], np.where(lane >= 1, v - 1, v))
    np.testing.assert_array_equal(out[:, 2], np.where((lane & 15) + 2 < 16, v + 2, v))
    np.testing.assert_array_equal(out[:, 3], v[first + (lane ^ 5)])
    np.testing.assert_array_equal(out[:, 4], sum(1 << b for b in range(0, 32, 3)))
    np.testing.assert_array_equal(out[:, 5], 20)
    np.testing.assert_array_equal(out[:, 6], t < 32)


def test_every_block_finds_shared_memory_unwritten(module):
    out = np.zeros((3, 65), np.float32)
    module.get_function("read_unwritten_shared")(3, 64, (out,))
    np.testing.assert_array_equal(out[:, :32], 1.0)
    assert np.isnan(out[:, 32:64]).all()  # in the first block too, not the previous block's values
    np.testing.assert_array_equal(out[:, 64], [-1, 5, -1])  # all-ones bytes are int -1


def test_threads_waiting_at_different_barriers_is_an_error(module):
    with pytest.raises(RuntimeError, match=r"mismatched_barriers: barrier deadlock in block \(0, 0, 0\): 31 threads wait "
                                           r"at __syncthreads while 1 wait at a warp barrier"):
        module.get_function("mismatched_barriers")(1, 32, (np.zeros(32, np.int32),))


def test_device_assert_becomes_an_error(module):
    x = np.array([0, 1, -5, 3], np.int32)
    message = r"checked_copy: device-side assert triggered: .*kernels.cu:\d+: assert\(x\[i\] >= 0\) failed .*thread \(2, 0, 0\)"
    with pytest.raises(RuntimeError, match=message):
        module.get_function("checked_copy")(1, 4, (x, np.empty_like(x), np.int32(4)))


def test_portable_ucontext_fibers_give_the_same_results(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    portable = RawModule(code=KERNELS, options=("-DGPUCNN_EMU_UCONTEXT",), name_expressions=NAME_EXPRESSIONS)
    check_tiled_matmul(portable, np.float64)
    check_warp_shuffle_sum(portable)


def test_debug_build_reports_out_of_bounds_shared_memory(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    monkeypatch.setenv("GPUCNN_EMULATOR_DEBUG", "1")
    source = (
        'extern "C" __global__ void tile_overrun(const float* x, float* y) {\n'
        "    __shared__ float tile[32];\n"
        "    tile[threadIdx.x] = x[threadIdx.x];  // a 33-thread block writes one past the tile\n"
        "    __syncthreads();\n"
        "    y[threadIdx.x] = tile[threadIdx.x];\n"
        "}\n"
    )
    x = np.arange(33, dtype=np.float32)
    RawModule(code=source).get_function("tile_overrun")(1, 33, (x, np.zeros_like(x)))
    err = capfd.readouterr().err
    assert "kernels.cu:3:" in err and "index 32 out of bounds for type 'float [32]'" in err, err


def saxpy_args(n=10):
    return [np.float32(1.0), np.ones(n, np.float32), np.ones(n, np.float32), np.int64(n)]


@pytest.mark.parametrize(
    "position, value, message",
    [
        (3, 10, r"argument 3 \(parameter type long long int\) needs a NumPy scalar of dtype int64.*got int 10"),
        (0, 1.0, r"argument 0 \(parameter type float\) needs a NumPy scalar of dtype float32.*got float"),
        (3, np.int32(10), r"argument 3 .* needs a NumPy scalar of dtype int64, but got int32"),
        (1, np.ones(10, np.float64), r"argument 1 \(parameter type const float\*\) needs an array of dtype float32, "
                                     r"but got dtype float64"),
        (2, np.ones(20, np.float32)[::2], r"argument 2 .* needs a C-contiguous array"),
        (2, np.broadcast_to(np.float32(1), (10,)), r"argument 2 .* C-contiguous|argument 2 .* read-only"),
        (1, [1.0] * 10, r"argument 1 .* must be a NumPy array, but got builtins.list"),
        (0, np.ones(1, np.float32), r"argument 0 .* needs a NumPy scalar"),
    ],
)
def test_launch_refuses_arguments_a_gpu_would_misread(module, position, value, message):
    args = saxpy_args()
    args[position] = value
    with pytest.raises(TypeError, match=message):
        module.get_function("saxpy")(1, 32, tuple(args))


def test_launch_refuses_a_read_only_array_for_a_mutable_pointer(module):
    y = np.ones(10, np.float32)
    y.flags.writeable = False
    args = saxpy_args()
    args[2] = y
    with pytest.raises(TypeError, match=r"argument 2 \(parameter type float\*\) is a pointer to writable memory"):
        module.get_function("saxpy")(1, 32, tuple(args))


def test_launch_refuses_a_wrong_argument_count(module):
    message = r"saxpy: the kernel takes 4 arguments \(float, const float\*, float\*, long long int\), but got 3"
    with pytest.raises(TypeError, match=message):
        module.get_function("saxpy")(1, 32, tuple(saxpy_args()[:3]))


@pytest.mark.parametrize(
    "grid, block, shared_mem, message",
    [
        ((0,), (32,), 0, r"every grid dimension must be positive .* grid=\(0,\)"),
        (1, (32, 0), 0, r"every block dimension must be positive"),
        (1, (64, 32), 0, r"at most 1024 threads, but got block=\(64, 32, 1\) \(2048 threads\)"),
        (1, (1, 1, 65), 0, r"block=\(1, 1, 65\) exceeds CUDA's limits"),
        (1.0, 32, 0, r"grid must be an int or a tuple of 1 to 3 ints"),
        (1, 32, 48 * 1024 + 1, r"shared_mem must be an int from 0 to 49152 bytes"),
    ],
)
def test_launch_refuses_bad_configurations(module, grid, block, shared_mem, message):
    with pytest.raises(ValueError, match=message):
        module.get_function("saxpy")(grid, block, tuple(saxpy_args()), shared_mem=shared_mem)


def test_unknown_kernel_name_lists_the_known_ones(module):
    known = ", ".join([*build.extern_c_kernels(KERNELS), *NAME_EXPRESSIONS])
    assert known.startswith("saxpy, block_sum, indices_3d, ") and known.endswith("matmul_tiled<double, 8>")
    with pytest.raises(ValueError, match=re.escape(f"no kernel named 'matmul_tiled<float, 16>' in this module; "
                                                   f"known kernels: {known} (a template kernel")):
        module.get_function("matmul_tiled<float, 16>")


def test_path_argument_is_refused():
    with pytest.raises(ValueError, match=r"compiles CUDA source text, pass it as code="):
        RawModule(path="kernels.cu")


def test_compile_error_shows_gcc_message_and_kept_source(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    broken = 'extern "C" __global__ void broken(float* y) {\n    y[0] = undeclared_name;\n}\n'
    message = r"(?s)could not compile.*kernels\.cu.*kernels\.cu:2:12: error: 'undeclared_name' was not declared"
    with pytest.raises(RuntimeError, match=message):
        RawModule(code=broken).get_function("broken")


@pytest.mark.parametrize("debug", ["0", "1"], ids=["release", "debug"])
def test_compiled_library_is_cached(tmp_path, monkeypatch, debug):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    monkeypatch.setenv("GPUCNN_EMULATOR_DEBUG", debug)  # whatever the caller's environment says
    source = 'extern "C" __global__ void fill(int* y) { y[threadIdx.x] = threadIdx.x; }\n'
    first = build.build(source, (), ["fill"])
    mtime = first.stat().st_mtime_ns
    assert build.build(source, (), ["fill"]) == first and first.stat().st_mtime_ns == mtime
    assert build.build(source, ("-DVARIANT=1",), ["fill"]) != first  # options are part of the key
    # A release build leaves no build directory behind; a debug build keeps its sources for the debugger.
    builds = [p for p in tmp_path.iterdir() if not p.name.endswith(".so")]
    assert len(list(tmp_path.glob("*.so"))) == 2
    assert len(builds) == (2 if debug == "1" else 0) and all((b / "kernels.cu").is_file() for b in builds)


def test_headers_through_include_paths_are_compiled_and_part_of_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "value.h").write_text("#define VALUE 7\n")
    source = '#include "value.h"\nextern "C" __global__ void fill(int* y) { y[threadIdx.x] = VALUE; }\n'
    y = np.zeros(4, np.int32)
    RawModule(code=source, options=("-I", str(tmp_path))).get_function("fill")(1, 4, (y,))
    (tmp_path / "value.h").write_text("#define VALUE 8\n")
    RawModule(code=source, options=(f"-I{tmp_path}",)).get_function("fill")(1, 4, (y,))
    np.testing.assert_array_equal(y, 8)


def test_kernel_discovery_skips_templates_comments_and_macros():
    source = (
        "// __global__ void in_comment(int* x) {}\n"
        "#define DECLARE __global__ void in_macro(int* x)\n"
        "template <int N>\n__global__ void templated(int* x) {}\n"
        'extern "C" {\n__global__ void __launch_bounds__(256) bounded(int* x) {}\n}\n'
        'extern "C" __global__ void plain(const float* __restrict__ x) {}\n'
        "__global__ void cpp_linkage(int* x) {}\n"  # CuPy finds it only through a name expression
    )
    assert build.extern_c_kernels(source) == ["bounded", "plain"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_the_test_kernels_are_real_cuda(tmp_path):
    instances = ", ".join(f"(void*)&{e}" for e in NAME_EXPRESSIONS)
    (tmp_path / "kernels.cu").write_text(KERNELS + f"\nvoid* const instances[] = {{{instances}}};\n")
    result = subprocess.run(
        ["nvcc", "-arch=sm_80", "-c", "kernels.cu", "-o", "kernels.o"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
