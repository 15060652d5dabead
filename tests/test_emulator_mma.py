"""The emulator's nvcuda::wmma (gpucnn/emulator/mma.h): TF32 warp matrix products against
NumPy on TF32-rounded inputs, without and with the checking mode; TF32 rounding (ties away
from zero) and the tensor core's truncation of unrounded operands; and the wrong uses the
checking mode reports (a tile past a shared array, an unwritten tile, a race between warps
through a tile, a divergent warp, a misaligned tile)."""
from pathlib import Path

import numpy as np
import pytest

from gpucnn.emulator import KernelError, RawModule

SOURCE = (Path(__file__).parent / "wmma_kernels.cu").read_text()
LINES = SOURCE.splitlines()
PRODUCTS = ("wmma_product<nvcuda::wmma::row_major>", "wmma_product<nvcuda::wmma::col_major>")


def tf32(x):
    """cvt.rna.tf32.f32 in NumPy: keep 10 mantissa bits, rounding to nearest, ties away from
    zero (adding half a unit of the 10th bit to the magnitude, then truncating); Inf and NaN
    unchanged."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    return np.where(finite, (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000), bits).view(np.float32)


def truncated(x):
    """What the tensor core reads of an operand that was not rounded: its low 13 bits dropped."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def product(a, b, c=0.0):
    """a @ b + c in float64, and a bound on float32 accumulation's error for it."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return a @ b + c, np.abs(a) @ np.abs(b) + np.abs(c)


def assert_fp32_accumulation(got, expected, magnitude, terms):
    assert np.all(np.abs(got - expected) <= terms * 2.0 ** -23 * magnitude + 1e-30), np.max(np.abs(got - expected))


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "checking"])
def module(request):
    return RawModule(code=SOURCE, sanitize=request.param, name_expressions=PRODUCTS)


@pytest.fixture(scope="module")
def checking():
    return RawModule(code=SOURCE, sanitize=True, name_expressions=PRODUCTS)


def line_of(text):
    return next(i for i, line in enumerate(LINES, 1) if text in line)


def reported(module, kernel, threads, *args):
    """The KernelError of launching kernel in one block of threads, with args."""
    with pytest.raises(KernelError) as caught:
        module.get_function(kernel)((1,), (threads,), args)
    assert caught.value.kernel == kernel
    return caught.value


def test_float_to_tf32_rounds_to_nearest_ties_away_from_zero(module):
    one_ulp = 2.0 ** -10  # of a TF32 number in [1, 2)
    x = np.array([1 + one_ulp / 2, -(1 + one_ulp / 2), 1 + 3 * one_ulp / 2, 1 + one_ulp / 2 - 2.0 ** -23,
                  1 + one_ulp / 2 + 2.0 ** -23, 3.0e38, np.inf, -np.inf, 1e-30, 0.0, -0.0], np.float32)
    expected = np.array([1 + one_ulp, -(1 + one_ulp), 1 + 2 * one_ulp, 1.0, 1 + one_ulp], np.float32)
    y = np.zeros_like(x)
    module.get_function("to_tf32")((1,), (32,), (x, y, np.int32(x.size)))
    np.testing.assert_array_equal(y[:5], expected)  # the ties go up in magnitude, both signs
    np.testing.assert_array_equal(y.view(np.uint32), tf32(x).view(np.uint32))
    random = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    y = np.zeros_like(random)
    module.get_function("to_tf32")((1,), (32,), (random, y, np.int32(random.size)))
    np.testing.assert_array_equal(y.view(np.uint32), tf32(random).view(np.uint32))


@pytest.mark.parametrize("b_layout", ["row_major", "col_major"])
@pytest.mark.parametrize("rounded", [True, False], ids=["rounded", "unrounded"])
def test_one_warp_tile_product_against_numpy(module, b_layout, rounded):
    rng = np.random.default_rng(1)
    K = 24
    A = rng.standard_normal((16, K)).astype(np.float32)
    B = rng.standard_normal((K, 16)).astype(np.float32)
    C = rng.standard_normal((16, 16)).astype(np.float32)
    stored, b_step, ldb = (B, 16, 16) if b_layout == "row_major" else (np.ascontiguousarray(B.T), 1, K)
    out = C.copy()
    module.get_function(f"wmma_product<nvcuda::wmma::{b_layout}>")(
        (1,), (32,), (A, stored, out, np.int32(K), np.int32(b_step), np.int32(ldb), np.int32(rounded)))
    operand = tf32 if rounded else truncated
    expected, magnitude = product(operand(A), operand(B), C)
    assert_fp32_accumulation(out, expected, magnitude, K + 1)
    # Rounding matters at this size: the other rounding misses by far more than accumulation.
    other, _ = product((truncated if rounded else tf32)(A), (truncated if rounded else tf32)(B), C)
    assert np.max(np.abs(out - other)) > 10 * np.max(np.abs(out - expected))


def test_four_warps_through_shared_memory_any_size(module):
    rng = np.random.default_rng(2)
    M, N, K = 45, 37, 19  # none a multiple of the 32 x 32 x 8 tile
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = np.full((M, N), np.nan, np.float32)
    module.get_function("wmma_tiled")(((N + 31) // 32, (M + 31) // 32), (128,),
                                      (A, B, C, np.int32(M), np.int32(N), np.int32(K)))
    expected, magnitude = product(tf32(A), tf32(B))
    assert_fp32_accumulation(C, expected, magnitude, K)


def test_a_tile_past_a_shared_array_is_reported(checking):
    e = reported(checking, "wmma_load_past_shared", 32, np.ones(128, np.float32), np.zeros(32, np.float32))
    assert e.check == "out-of-bounds"
    assert "read of 4 bytes at byte 512 of shared array tile, which holds 512 bytes" in str(e)
    assert "thread (16, 0, 0)" in str(e)  # lane 16 holds the fragment's row 8: the tile's row 16
    assert e.line == line_of("wmma::load_matrix_sync(a, &tile[8][0], 8);")


def test_an_unwritten_tile_is_reported(checking):
    e = reported(checking, "wmma_load_unwritten", 32, np.zeros(32, np.float32))
    assert e.check == "uninitialized" and "byte 0 of shared array tile" in str(e)


def test_a_tile_shared_between_warps_without_a_barrier_races(checking):
    e = reported(checking, "wmma_store_load_race", 64, np.zeros(32, np.float32))
    assert e.check == "race" and "read-after-write" in str(e) and "shared array tile" in str(e)
    assert "thread (32, 0, 0) reads it" in str(e) and "thread (0, 0, 0) wrote it" in str(e)


def test_a_warp_that_does_not_all_arrive_is_a_barrier_error(module):
    e = reported(module, "wmma_half_warp", 32, np.ones(1, np.float32), np.zeros(32, np.float32))
    assert e.check == "barrier" and "exited" in str(e)


def test_a_warp_collective_needs_a_whole_warp(module):
    e = reported(module, "wmma_load_unwritten", 16, np.zeros(32, np.float32))
    assert e.check == "barrier" and "needs the whole warp" in str(e)


def test_a_misaligned_tile_is_reported(checking):
    e = reported(checking, "wmma_misaligned", 32, np.ones(64, np.float32), np.zeros(32, np.float32))
    assert e.check == "misaligned" and "16 bytes past a multiple of 32" in str(e)


def test_lanes_at_different_calls_are_a_barrier_error(module):
    e = reported(module, "wmma_divergent_loads", 32, np.ones(256, np.float32), np.zeros(32, np.float32))
    assert e.check == "barrier" and "lane 16 of the warp is at another call" in str(e)
