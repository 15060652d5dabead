"""The emulator's TF32 tensor-core arithmetic (gpucnn/emulator/tensor_core.h) bit for bit
against Microsoft's MMA-Sim, the model of mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
that its authors checked against each GPU, for every architecture GPUCNN_EMULATOR_ARCH
accepts: random fragments and adversarial ones (cancellation, exponents spread past 24 bits,
subnormal operands and products, the exponent floor, overflow, Inf and NaN, signed zeros, an
accumulator that dominates or vanishes, operands truncated not rounded); and the setting."""
import os
import sysconfig

import numpy as np
import pytest

from gpucnn.backends.cuda._kernels import with_headers
from gpucnn.emulator import RawModule, build

# One warp per fragment f: D[f] = A[f] B[f] + C[f] through the project's mma (mma_tf32.cuh),
# each lane holding its registers where the PTX ISA puts them ("Matrix Fragments for
# mma.m16n8k8", .tf32): g = lane / 4, t = lane % 4; a = A(g, t), A(g + 8, t), A(g, t + 4),
# A(g + 8, t + 4); b = B(t, g), B(t + 4, g); c = C(g, 2t), C(g, 2t + 1), C(g + 8, 2t), C(g + 8, 2t + 1).
SOURCE = with_headers(r"""
#include "mma_tf32.cuh"
extern "C" __global__ void __launch_bounds__(32) fragments(const float* A, const float* B, const float* C, float* D)
{
    const long long f = blockIdx.x;
    const unsigned g = threadIdx.x / 4, t = threadIdx.x % 4;
    A += f * 128;
    B += f * 64;
    const unsigned a[4] = {(unsigned)__float_as_int(A[g * 8 + t]), (unsigned)__float_as_int(A[g * 8 + 64 + t]),
                           (unsigned)__float_as_int(A[g * 8 + t + 4]), (unsigned)__float_as_int(A[g * 8 + 64 + t + 4])};
    const unsigned b[2] = {(unsigned)__float_as_int(B[t * 8 + g]), (unsigned)__float_as_int(B[(t + 4) * 8 + g])};
    const long long c[4] = {f * 128 + g * 8 + 2 * t, f * 128 + g * 8 + 2 * t + 1, f * 128 + (g + 8) * 8 + 2 * t,
                            f * 128 + (g + 8) * 8 + 2 * t + 1};
    float acc[4] = {C[c[0]], C[c[1]], C[c[2]], C[c[3]]};
    mma_m16n8k8_tf32(acc, a, b);
    for (int i = 0; i < 4; ++i) D[c[i]] = acc[i];
}
""", "test_tensor_core.cu")
# MMA-Sim's name for each architecture.
MMASIM_ARCH = {"sm_80": "Ampere", "sm_86": "Ampere", "sm_89": "Ada Lovelace", "sm_90": "Hopper",
               "sm_100": "Blackwell", "sm_120": "RTX Blackwell"}
SHAPE = "m16n8k8.f32.tf32.tf32.f32"
# Fragments of each kind below per architecture: the two in depth, the others (the same
# two models, by tensor_core.h's table) enough to check that table.
PER_KIND = {"sm_80": 300, "sm_90": 300}


@pytest.fixture(scope="module")
def mma_class():
    pytest.importorskip("torch")
    pytest.importorskip("mmasim")
    # Importing MMA-Sim builds a small C++ helper with torch's extension builder, which runs
    # `ninja` from PATH: the ninja wheel puts it beside this interpreter.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", ""))
        from mmasim.nv_ptx.sim import MMA
    return MMA


def emulated(A, B, C, monkeypatch, arch):
    if arch is None:
        monkeypatch.delenv("GPUCNN_EMULATOR_ARCH", raising=False)
    else:
        monkeypatch.setenv("GPUCNN_EMULATOR_ARCH", arch)
    kernel = RawModule(code=SOURCE).get_function("fragments")
    D = np.empty_like(C)
    kernel((len(A),), (32,), (A, B, C, D))
    return D


def simulated(mma, A, B, C):
    """MMA-Sim's D for each fragment: what MMA.__call__ does for one fragment (a row of A and a
    column of B per element, into MMA.dpa), over all fragments at once."""
    import torch

    a = torch.from_numpy(A)[:, :, None, :].expand(-1, -1, 8, -1)
    b = torch.from_numpy(B).transpose(1, 2)[:, None, :, :].expand(-1, 16, -1, -1)
    D = mma.dpa(a, b, torch.from_numpy(C)).numpy()
    one = mma(torch.from_numpy(A[0]), torch.from_numpy(B[0]), torch.from_numpy(C[0])).numpy()
    assert np.array_equal(one.view(np.uint32), D[0].view(np.uint32))
    return D


def bits(x):
    return np.ascontiguousarray(x, np.float32).view(np.uint32)


def floats(u):
    return np.asarray(u, np.uint32).view(np.float32)


def scaled(rng, shape, low, high):
    """Normal values times 2^e, e uniform in [low, high]: full float32 mantissas, so the
    tensor core's truncation of operands shows."""
    return (rng.standard_normal(shape) * np.exp2(rng.integers(low, high + 1, shape))).astype(np.float32)


def shapes(n):
    return (n, 16, 8), (n, 8, 8), (n, 16, 8)


def random_bits(rng, n):
    """Every float32 bit pattern equally likely: huge and tiny exponents, subnormals, Inf, NaN."""
    return [floats(rng.integers(0, 2**32, s, dtype=np.uint64)) for s in shapes(n)]


def wide_exponents(rng, n):
    """Products and accumulator spread over 2^-60 .. 2^60: far more than F bits apart."""
    return [scaled(rng, s, -60, 60) for s in shapes(n)]


def nearby_exponents(rng, n):
    """Products a few bits apart, where each term's cut below F bits matters most."""
    return [scaled(rng, s, -3, 3) for s in shapes(n)]


def cancellation(rng, n):
    """Catastrophic cancellation: k = 4..7 undo k = 0..3 up to a few low bits, and the
    accumulator undoes the rest of the exact sum, or nearly."""
    A, B, _ = nearby_exponents(rng, n)
    A[:, :, 4:] = floats(bits(A[:, :, :4]) ^ rng.integers(0, 2**16, A[:, :, :4].shape, dtype=np.uint32))
    B[:, 4:, :] = -B[:, :4, :]
    exact = floats(bits(A) & 0xFFFFE000).astype(np.float64) @ floats(bits(B) & 0xFFFFE000).astype(np.float64)
    C = -exact * (1 + rng.choice([0.0, 2.0**-24, -(2.0**-20), 2.0**-12], exact.shape))
    return A, B, C.astype(np.float32)


def subnormals(rng, n):
    """Subnormal operands (some that truncation makes zero), products far below 2^-126,
    subnormal or zero accumulators: the results are subnormal, cut toward zero, or +0."""
    A, B, C = scaled(rng, (n, 16, 8), -149, -110), scaled(rng, (n, 8, 8), -40, 10), scaled(rng, (n, 16, 8), -149, -120)
    B[rng.random(B.shape) < 0.3] *= np.float32(2.0**-100)
    C[rng.random(C.shape) < 0.3] = 0
    return A, B, C


def exponent_floor(rng, n):
    """Products near the architecture's floor for a zero term (2^-132, 2^-133), with zero
    products and accumulators among them, which take that floor as their exponent."""
    A, B = scaled(rng, (n, 16, 8), -80, -60), scaled(rng, (n, 8, 8), -80, -60)
    A[rng.random(A.shape) < 0.2] = 0
    C = np.where(rng.random((n, 16, 8)) < 0.5, 0, scaled(rng, (n, 16, 8), -149, -126)).astype(np.float32)
    return A, B, C


def overflow(rng, n):
    """Products and accumulators near 2^128: overflow to Inf, or huge terms that cancel."""
    A, B = scaled(rng, (n, 16, 8), 55, 64), scaled(rng, (n, 8, 8), 55, 64)
    C = (rng.choice([-1.0, 1.0, 0.0], (n, 16, 8)) * np.float32(3.4e38) * rng.uniform(0.5, 1, (n, 16, 8)))
    return A, B, C.astype(np.float32)


SPECIAL = np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF801FFF, 0x7F802000,
                    0x00000000, 0x80000000, 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80001FFF, 0x00002000,
                    0x00800000], np.uint32)


def specials(rng, n):
    """Inf, NaN (also NaNs whose payload truncation drops, which read as Inf), signed zeros,
    the largest and smallest magnitudes, sprinkled over ordinary values: 0 * Inf, Inf - Inf."""
    arrays = nearby_exponents(rng, n)
    for x in arrays:
        where = rng.random(x.shape) < 0.08
        x[where] = floats(rng.choice(SPECIAL, where.sum()))
    return arrays


def signed_zeros(rng, n):
    """Zero operands and accumulators of either sign, and products that cancel exactly."""
    A, B, C = nearby_exponents(rng, n)
    A[rng.random(A.shape) < 0.5] = -0.0
    B[rng.random(B.shape) < 0.5] = 0.0
    A[: n // 2, :, 4:] = A[: n // 2, :, :4]
    B[: n // 2, 4:, :] = -B[: n // 2, :4, :]
    C = np.where(rng.random(C.shape) < 0.7, rng.choice([-0.0, 0.0], C.shape), C).astype(np.float32)
    return A, B, C


def dominant_accumulator(rng, n):
    """An accumulator 2^10 .. 2^40 times the products, or as many times smaller."""
    A, B, C = nearby_exponents(rng, n)
    C *= np.exp2(rng.choice([-1, 1], C.shape) * rng.integers(10, 41, C.shape)).astype(np.float32)
    return A, B, C


def unrounded(rng, n):
    """TF32 values plus 0x1000 .. 0x1fff in the bits the tensor core drops: rounding them
    would change the result, truncating does not."""
    arrays = nearby_exponents(rng, n)
    for x in arrays[:2]:
        x[...] = floats(bits(x) & 0xFFFFE000 | rng.integers(0x1000, 0x2000, x.shape, dtype=np.uint32))
    return arrays


KINDS = (random_bits, wide_exponents, nearby_exponents, cancellation, subnormals, exponent_floor, overflow,
         specials, signed_zeros, dominant_accumulator, unrounded)


def assert_same_bits(got, expected, A, B, C):
    """Bit for bit; NaNs as NaNs (MMA-Sim gives 0x7fffffff, the bits a GPU writes)."""
    differ = (bits(got) != bits(expected)) & ~(np.isnan(got) & np.isnan(expected))
    if differ.any():
        f, i, j = np.argwhere(differ)[0]
        pytest.fail(
            f"{differ.sum()} of {got.size} elements differ; first: fragment {f}, row {i}, column {j}: "
            f"a={[hex(v) for v in bits(A[f, i])]} b={[hex(v) for v in bits(B[f, :, j])]} c={hex(bits(C[f, i, j]))}: "
            f"emulator {hex(bits(got[f, i, j]))}, MMA-Sim {hex(bits(expected[f, i, j]))}"
        )


@pytest.mark.parametrize("arch", build.ARCHES)
def test_matches_mmasim(arch, mma_class, monkeypatch):
    mma = mma_class(MMASIM_ARCH[arch], SHAPE)
    rng = np.random.default_rng(int(arch.removeprefix("sm_")))
    parts = [kind(rng, PER_KIND.get(arch, 40)) for kind in KINDS]
    A, B, C = (np.ascontiguousarray(np.concatenate(x)) for x in zip(*parts))
    expected = simulated(mma, A, B, C)
    assert_same_bits(emulated(A, B, C, monkeypatch, arch), expected, A, B, C)
    # The adversarial kinds reach what they aim at.
    assert np.isnan(expected).any() and np.isinf(expected).any()
    assert (bits(expected) == 0).any() and not (bits(expected) == 0x80000000).any()  # zeros, all +0
    assert ((bits(expected) & 0x7FFFFFFF) - 1 < 0x007FFFFF).any()  # subnormal results


def test_default_is_hopper(mma_class, monkeypatch):
    """Unset, the setting is sm_90, and Hopper's arithmetic differs from Ampere's."""
    rng = np.random.default_rng(7)
    A, B, C = nearby_exponents(rng, 64)
    hopper, ampere = (simulated(mma_class(name, SHAPE), A, B, C) for name in ("Hopper", "Ampere"))
    assert (bits(hopper) != bits(ampere)).any()
    assert np.array_equal(bits(emulated(A, B, C, monkeypatch, None)), bits(hopper))


@pytest.mark.parametrize("value", ["sm_75", "90", "hopper", "sm_90a"])
def test_unknown_arch_is_refused(value, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_ARCH", value)
    with pytest.raises(ValueError, match=rf"GPUCNN_EMULATOR_ARCH='{value}'.*accepted: sm_80, sm_86, sm_89, sm_90"):
        RawModule(code=SOURCE).get_function("fragments")
