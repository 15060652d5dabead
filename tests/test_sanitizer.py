"""The emulator's checking mode reports every class of kernel bug it claims to (each on a
small, deliberately wrong kernel from sanitizer_bugs.cu), names the check, the kernel, the
threads, the address as an offset into the named argument or shared array, and the source
line; and it reports nothing on correct kernels. Also: launch limits, the C++ dialect, and
the GPU's floating-point rounding."""
import shutil
import subprocess

import numpy as np
import pytest

from gpucnn.emulator import KernelError, RawModule, build, mark_uninitialized

from sanitizer_bugs import LAUNCHES, SOURCE as BUGS, f32
from test_emulator import KERNELS, NAME_EXPRESSIONS, check_tiled_matmul, check_warp_shuffle_sum

LINES = BUGS.splitlines()
BUGS_KERNELS = build.extern_c_kernels(BUGS)


@pytest.fixture(scope="module")
def bugs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path_factory.mktemp("sanitizer-cache")))
        module = RawModule(code=BUGS, sanitize=True)
        module.get_function("copy")  # compiles now, inside the temporary cache
        yield module


def line_of(text):
    """The 1-based line of sanitizer_bugs.cu that holds `text`."""
    return next(i for i, line in enumerate(LINES, 1) if text in line)


def report(module, kernel, args=None):
    """The KernelError of launching `kernel` as LAUNCHES says (with `args`, if given), after
    checking that it names LAUNCHES' check and the kernel."""
    launch = LAUNCHES[kernel]
    with pytest.raises(KernelError) as caught:
        module.get_function(kernel)(launch.grid, launch.block, args or launch.args(), shared_mem=launch.shared_mem)
    assert caught.value.check == launch.check and caught.value.kernel == kernel, caught.value
    return caught.value


def test_every_bug_kernel_is_tested():
    assert set(LAUNCHES) <= set(BUGS_KERNELS) and set(BUGS_KERNELS) - set(LAUNCHES) == {"copy"}


def test_read_one_past_the_end(bugs):
    e = report(bugs, "read_past_end")
    assert "read of 4 bytes at byte 160 of argument 0 (x), which holds 160 bytes" in str(e)
    assert "block (0, 0, 0) thread (40, 0, 0)" in str(e)
    assert e.line == line_of("y[i < n - 1 ? i : 0] = x[i];")
    assert "at line" in str(e) and "x[i]" in str(e)


def test_a_far_read_is_reported_not_dereferenced(bugs):
    e = report(bugs, "read_far_away")
    assert "in no buffer of this launch" in str(e) and "byte 1073741824 of argument 0 (x) (128 bytes)" in str(e)


def test_a_write_past_the_end_leaves_the_neighbour_alone(bugs):
    x, y, neighbour = f32(64), f32(64, 0.0), f32(16, 7.0)
    e = report(bugs, "write_past_end", (x, y, np.int32(65)))
    assert "write of 4 bytes at byte 256 of argument 1 (y)" in str(e)
    assert (neighbour == 7.0).all()
    np.testing.assert_array_equal(y, x)  # what the kernel wrote before the fault is kept, as on a GPU


def test_shared_array_indexed_past_its_end(bugs):
    e = report(bugs, "shared_past_end")
    assert "write of 4 bytes at byte 128 of shared array tile, which holds 128 bytes" in str(e)
    assert "thread (32, 0, 0)" in str(e)


def test_dynamic_shared_memory_past_shared_mem(bugs):
    e = report(bugs, "dynamic_shared_past_end")
    assert "byte 64 of dynamic shared memory (extern __shared__), which holds 64 bytes" in str(e)


@pytest.mark.parametrize("kernel, size", [("misaligned_float4", 16), ("misaligned_float2", 8), ("misaligned_double", 8)])
def test_misaligned_vector_and_double_loads(bugs, kernel, size):
    e = report(bugs, kernel)
    assert f"of {size} bytes at byte 4 of argument 0 (x)" in str(e) and f"not a multiple of {size}" in str(e)


@pytest.mark.parametrize("kernel, expected", [
    # whatever the order the emulator runs them in: thread 0 happens to write first
    ("neighbour_without_barrier", ["read-after-write", "byte 0 of shared array s",
                                   "thread (1, 0, 0) reads it, and block (0, 0, 0) thread (0, 0, 0) wrote it"]),
    ("tree_missing_barrier", ["shared array s"]),
    ("warp_synchronous_reduction", ["shared array s", "__syncwarp"]),  # lanes of one warp, no warp barrier
    ("reads_another_blocks_output", ["read-after-write", "different blocks",
                                     "block (1, 0, 0) thread (0, 0, 0) reads it, and block (0, 0, 0) thread (0, 0, 0) wrote it"]),
    ("counter_without_atomic", ["argument 0 (y)"]),
])
def test_races(bugs, kernel, expected):
    e = report(bugs, kernel)
    assert all(text in str(e) for text in expected), str(e)


def test_tiled_loop_missing_its_trailing_barrier(bugs):
    e = report(bugs, "tile_loop_missing_barrier")
    # A thread's store of the next tile races with the others' loads of this one: which of the
    # two is seen second depends on the schedule, the hazard does not.
    assert "shared array tile" in str(e)
    assert e.line in (line_of("tile[threadIdx.x] = x[t * blockDim.x + threadIdx.x];"), line_of("sum += tile[k];"))


def test_unwritten_shared_memory_through_fmaxf_and_an_int_compare(bugs):
    e = report(bugs, "unwritten_shared_through_fmaxf")
    assert "byte 128 of shared array tile" in str(e) and "thread (32, 0, 0)" in str(e)
    e = report(bugs, "unwritten_shared_int")
    assert "shared array count" in str(e)


def uninitialized_copy(bugs, y):
    with pytest.raises(KernelError) as caught:
        bugs.get_function("copy")(1, 64, (y, f32(64)))
    assert caught.value.check == "uninitialized"
    return caught.value


def test_global_memory_no_kernel_wrote(bugs):
    y = mark_uninitialized(np.empty(64, np.float32))
    e = uninitialized_copy(bugs, y)
    assert "byte 0 of argument 0 (y)" in str(e)
    # Once a kernel has written it, it may be read: the written bytes are kept across launches.
    bugs.get_function("copy")(1, 64, (f32(64), y))
    bugs.get_function("copy")(1, 64, (y, f32(64)))
    half = mark_uninitialized(np.empty(64, np.float32))
    bugs.get_function("copy")(1, 32, (f32(32), half))
    e = uninitialized_copy(bugs, half)
    assert "byte 128 of argument 0 (y)" in str(e)


def test_barriers_at_different_lines(bugs):
    e = report(bugs, "divergent_barriers")
    assert "on line" in str(e) and "divergent" in str(e)


def test_barrier_reached_by_part_of_the_block(bugs):
    e = report(bugs, "barrier_after_early_return")
    assert "reached by 40 of the block's 64 threads" in str(e)


def test_warp_mask_naming_exited_lanes(bugs):
    e = report(bugs, "shuffle_with_exited_lanes")
    assert "mask 0xffffffff" in str(e) and "lane 16" in str(e) and "exited" in str(e)


@pytest.mark.parametrize("sanitize", [False, True])
def test_launch_bounds_are_enforced(tmp_path, monkeypatch, sanitize):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    module = RawModule(code=BUGS, sanitize=sanitize)
    module.get_function("bounded_to_128")(1, 128, (f32(128),))
    e = report(module, "bounded_to_128")
    assert "256 threads exceeds the kernel's __launch_bounds__(128)" in str(e)


def test_static_shared_memory_over_48_kib(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    source = ('extern "C" __global__ void big_shared(float* y) {\n'
              "    __shared__ float big[16384];\n"  # 64 KiB: ptxas refuses it
              "    big[threadIdx.x] = 1.0f;\n"
              "    __syncthreads();\n"
              "    y[threadIdx.x] = big[threadIdx.x];\n"
              "}\n")
    with pytest.raises(KernelError) as caught:
        RawModule(code=source).get_function("big_shared")(1, 32, (f32(32),))
    e = caught.value
    assert e.check == "launch" and "65536 bytes of static __shared__ memory" in str(e)


def test_the_options_dialect_is_compiled(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    source = 'consteval int three() { return 3; }\nextern "C" __global__ void k(int* y) { y[0] = three(); }\n'
    with pytest.raises(RuntimeError, match="could not compile"):
        RawModule(code=source).get_function("k")  # NVRTC's default is C++17, which has no consteval
    y = np.zeros(1, np.int32)
    RawModule(code=source, options=("-std=c++20",)).get_function("k")(1, 1, (y,))
    assert y[0] == 3
    with pytest.raises(RuntimeError, match="C\\+\\+17 or later"):
        RawModule(code=source, options=("--std=c++14",)).get_function("k")


def test_correct_kernels_run_clean(tmp_path, monkeypatch):
    """No false positives: atomics, a thread re-reading its own slot, shuffles, votes, barriers
    in uniform branches, dynamic shared memory, grid-stride loops."""
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    module = RawModule(code=KERNELS, name_expressions=NAME_EXPRESSIONS, sanitize=True)
    check_tiled_matmul(module, np.float32)
    check_warp_shuffle_sum(module)
    x = np.arange(1000, dtype=np.float64)
    sums = np.zeros(4, np.float64)
    module.get_function("block_sum")(4, 256, (x, sums, np.int32(1000)), shared_mem=256 * 8)
    np.testing.assert_array_equal(sums, np.pad(x, (0, 24)).reshape(4, 256).sum(axis=1))
    counts, total = np.zeros(4, np.int32), np.zeros(1, np.float32)
    module.get_function("histogram")(4, 64, (np.arange(200, dtype=np.int32) % 4, counts, total, np.int32(200)))
    assert counts.tolist() == [50] * 4 and total[0] == 100.0
    out = np.zeros(7 * 64, np.int32)
    module.get_function("warp_intrinsics")(1, 64, (out,))
    stride = RawModule(code=GRID_STRIDE, sanitize=True)
    y = np.zeros(10_000, np.float32)
    stride.get_function("own_slot_twice")(3, 128, (np.arange(10_000, dtype=np.float32), y, np.int64(10_000)))
    np.testing.assert_array_equal(y, 2 * np.arange(10_000, dtype=np.float32) + 1)


GRID_STRIDE = """
extern "C" __global__ void __launch_bounds__(128) own_slot_twice(const float* x, float* y, long long n) {
    __shared__ float mine[128];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        mine[threadIdx.x] = x[i];
        mine[threadIdx.x] += mine[threadIdx.x];      // a thread re-reads and rewrites its own slot
        if (blockDim.x > 1) mine[threadIdx.x] += 1;  // a branch uniform across the block
        y[i] = mine[threadIdx.x];
    }
}
"""

FLOATS = """
extern "C" __global__ void __launch_bounds__(32) separate(const float* a, float* y) { y[0] = a[0] * a[1] + a[2]; }
extern "C" __global__ void __launch_bounds__(32) fused(const float* a, float* y) { y[0] = fmaf(a[0], a[1], a[2]); }
extern "C" __global__ void __launch_bounds__(32) halve(const float* a, float* y) { y[0] = a[0] * 0.5f; }
extern "C" __global__ void __launch_bounds__(32) halve_double(const double* a, double* y) { y[0] = a[0] * 0.5; }
"""


@pytest.mark.parametrize("sanitize", [False, True])
def test_floating_point_is_the_gpus(tmp_path, monkeypatch, sanitize):
    """a*b + c is two roundings (NVRTC runs with --fmad=false, g++ with -ffp-contract=off), fmaf
    one; float32 subnormal results flush to zero, as CuPy's -ftz=true makes a GPU do, float64
    ones do not."""
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    module = RawModule(code=FLOATS, sanitize=sanitize)
    eps = np.float32(2.0**-23)
    a = np.array([1 + eps, 1 - eps, -1], np.float32)  # a0*a1 = 1 - 2^-46 exactly: rounds to 1
    y = np.zeros(1, np.float32)
    module.get_function("separate")(1, 1, (a, y))
    assert y[0] == 0.0
    module.get_function("fused")(1, 1, (a, y))
    assert y[0] == np.float32(-(2.0**-46))
    module.get_function("halve")(1, 1, (np.array([np.finfo(np.float32).tiny], np.float32), y))
    assert y[0] == 0.0
    d = np.zeros(1, np.float64)
    module.get_function("halve_double")(1, 1, (np.array([np.finfo(np.float64).tiny]), d))
    assert d[0] == np.finfo(np.float64).tiny / 2


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_the_bug_kernels_are_real_cuda(tmp_path):
    """They compile for a GPU as they are, so compute-sanitizer can run them there
    (scripts/sanitizer_bugs.py)."""
    (tmp_path / "bugs.cu").write_text(BUGS)
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_80", "-c", "bugs.cu", "-o", "bugs.o"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
