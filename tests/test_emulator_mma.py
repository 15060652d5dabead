"""The emulator's TF32 tensor-core instructions (gpucnn/emulator/mma.h, called by
cuda_kernels/mma_tf32.cuh under the emulator): mma.sync m16n8k8 with the PTX ISA's per-lane
fragment layout, against NumPy on TF32-rounded inputs, without and with the checking mode;
cvt.rna's rounding (ties away from zero); and the wrong uses the emulator reports (a fragment
load past a shared array or from an unwritten one, a warp that does not all arrive, lanes
at different mma instructions). The bits of the tensor core's sums are tests/test_tensor_core.py's."""
from pathlib import Path

import numpy as np
import pytest

from gpucnn.backends.cuda import _kernels
from gpucnn.backends.families import tf32
from gpucnn.emulator import KernelError, RawModule

NAME = "mma_tf32_kernels.cu"
TEXT = (Path(__file__).parent / NAME).read_text()
SOURCE = _kernels.with_headers(TEXT, NAME)
LINES = TEXT.splitlines()


def truncated(x):
    """What the tensor core reads of an operand that was not rounded: its low 13 bits dropped."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "checking"])
def module(request):
    return RawModule(code=SOURCE, sanitize=request.param)


@pytest.fixture(scope="module")
def checking():
    return RawModule(code=SOURCE, sanitize=True)


def line_of(text):
    return next(i for i, line in enumerate(LINES, 1) if text in line)


def reported(module, kernel, threads, *args):
    """The KernelError of launching kernel in one block of threads, with args."""
    with pytest.raises(KernelError) as caught:
        module.get_function(kernel)((1,), (threads,), args)
    assert caught.value.kernel == kernel
    return caught.value


def fragment_product(module, A, B, C, rounded=True):
    D = np.full((16, 8), np.nan, np.float32)
    module.get_function("fragment_product")((1,), (32,), (A, B, C, D, np.int32(rounded)))
    return D


def test_tf32_round_is_to_nearest_ties_away_from_zero(module):
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


def test_every_element_comes_from_the_lane_and_register_the_ptx_isa_names(module):
    # Small integers, all distinct: every product and sum is exact in float32, so one element
    # read from a wrong lane or register changes the result.
    A = np.arange(1, 16 * 8 + 1, dtype=np.float32).reshape(16, 8)
    B = (np.arange(8 * 8, dtype=np.float32).reshape(8, 8) * 3 + 200) % 257 + 1
    C = np.arange(16 * 8, dtype=np.float32).reshape(16, 8) * 1000
    np.testing.assert_array_equal(fragment_product(module, A, B, C), A.astype(np.float64) @ B + C)
    # One element moved at a time: exactly its row of D (A) or column of D (B) changes.
    for r, k in [(0, 0), (9, 3), (7, 4), (15, 7)]:
        A2 = A.copy()
        A2[r, k] += 1
        changed = fragment_product(module, A2, B, C) != fragment_product(module, A, B, C)
        assert changed[r].all() and changed.sum() == 8, (r, k)


@pytest.mark.parametrize("rounded", [True, False], ids=["rounded", "unrounded"])
def test_a_warp_product_against_numpy_on_tf32_inputs(module, rounded):
    rng = np.random.default_rng(1)
    A, B, C = (rng.standard_normal(shape).astype(np.float32) for shape in [(16, 8), (8, 8), (16, 8)])
    operand = tf32 if rounded else truncated
    a, b = operand(A).astype(np.float64), operand(B).astype(np.float64)
    expected, magnitude = a @ b + C, np.abs(a) @ np.abs(b) + np.abs(C)
    got = fragment_product(module, A, B, C, rounded)
    assert np.all(np.abs(got - expected) <= 9 * 2.0 ** -23 * magnitude), np.max(np.abs(got - expected))
    # Rounding matters at this size: the other rounding misses by far more than accumulation.
    other = (truncated if rounded else tf32)
    missed = other(A).astype(np.float64) @ other(B).astype(np.float64) + C
    assert np.max(np.abs(got - missed)) > 10 * np.max(np.abs(got - expected))


def test_a_fragment_load_past_a_shared_array_is_reported_at_the_kernels_load(checking):
    e = reported(checking, "load_past_shared", 32, np.ones(128, np.float32), np.zeros(32, np.float32))
    assert e.check == "out-of-bounds"
    assert "read of 4 bytes at byte 512 of shared array tile, which holds 512 bytes" in str(e)
    assert "thread (0, 0, 0)" in str(e)  # lane 0's a1 is the tile's row 8 + 8
    assert e.file == NAME and e.line == line_of("a[1] = tf32_round(tile[g + 8][t]);")
    assert f"at {NAME}:{e.line}: a[1] = tf32_round(tile[g + 8][t]);" in str(e)


def test_an_unwritten_fragment_is_reported(checking):
    e = reported(checking, "load_unwritten", 32, np.zeros(32, np.float32))
    assert e.check == "uninitialized" and "byte 0 of shared array tile" in str(e)
    assert e.line == line_of("a[0] = tf32_round(tile[g][t]);")


def test_a_warp_that_does_not_all_arrive_is_a_barrier_error(module):
    e = reported(module, "half_warp", 32, np.ones(1, np.float32), np.zeros(32, np.float32))
    assert e.check == "barrier" and "lane 16" in str(e) and "exited" in str(e)


def test_an_mma_needs_a_whole_warp(module):
    e = reported(module, "half_warp", 16, np.ones(1, np.float32), np.zeros(16, np.float32))
    assert e.check == "barrier" and "needs the whole warp" in str(e)


def test_lanes_at_different_mma_instructions_are_a_barrier_error(module):
    e = reported(module, "divergent_products", 32, np.ones(8, np.float32), np.zeros(32, np.float32))
    assert e.check == "barrier" and "lane 16 of the warp is at another call" in str(e)


def test_kernel_text_includes_only_our_headers():
    with pytest.raises(ValueError, match=r'bad\.cu:2: #include <mma\.h>: kernel files include only'):
        _kernels.with_headers("// a\n#include <mma.h>\n", "bad.cu")
    with pytest.raises(RuntimeError, match=r'bad\.cu:1 includes "missing\.cuh", which is missing from'):
        _kernels.with_headers('#include "missing.cuh"\n', "bad.cu")
