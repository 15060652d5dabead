"""What README.md's "What is bit-identical" claims, checked on a GPU: every call of every kernel
family (`gpucnn.backends.families`) on CuPy arrays against the same call on the emulator, from
the same .cu text. Our kernels' results must be the same bits (explicit FMAs, --fmad=false,
IEEE division and square root, float32 subnormals flushed on both; docs/emulator.md), the
TF32 convolutions' too, with the emulator reproducing this GPU's tensor cores
(GPUCNN_EMULATOR_ARCH). The calls that use CUDA's math library or cuBLAS are claimed equal
to rounding only, and are checked to that. Runs where a GPU is lent; skipped elsewhere."""
import contextlib

import numpy as np
import pytest

import gpucnn
import gpucnn.backends.cuda as cuda_ops
from gpucnn import cuda
from gpucnn.backends import families
from gpucnn.backends.cuda import _kernels
from gpucnn.emulator import build

pytestmark = pytest.mark.gpu

# The ops whose results a GPU and the emulator compute with different libraries, and which.
NOT_BIT_IDENTICAL = {
    "sigmoid_forward": "exp: CUDA's math library on a GPU, the C library on the emulator",
    "tanh_forward": "tanh: CUDA's math library on a GPU, the C library on the emulator",
    "gelu_forward": "erf and tanh: CUDA's math library on a GPU, the C library on the emulator",
    "gelu_backward": "erf, exp and tanh: CUDA's math library on a GPU, the C library on the emulator",
    "matmul": "cuBLAS on a GPU, NumPy's BLAS on the emulator",
}
# What they agree to: a few ulp of the math libraries, or float32 sums added in another order.
CLOSE = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5), np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13)}

CALLS = [(family, call) for family in families.FAMILIES for call in family.calls()]

# More shapes for the GEMM kernels: x, w, stride, padding. A thin layer, a strided one, one
# spanning several tiles.
CONV_SHAPES = {
    "lenet conv2": ((8, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0)),
    "stride 2, padded": ((4, 3, 17, 15), (8, 3, 3, 3), (2, 2), (1, 1)),
    "wide": ((2, 40, 9, 9), (70, 40, 3, 3), (1, 1), (1, 1)),
}


@pytest.fixture(scope="module", autouse=True)
def emulator_as_this_gpu():
    """The emulator's tensor cores set to this GPU's architecture (where it models it), and
    its modules built afresh in this process for that setting. Yields the architecture."""
    import cupy
    arch = f"sm_{cupy.cuda.Device().compute_capability}"
    with pytest.MonkeyPatch.context() as patch:
        if arch in build.ARCHES:
            patch.setenv("GPUCNN_EMULATOR_ARCH", arch)
        patch.setattr(_kernels, "_modules", {})
        patch.setattr(_kernels, "_functions", {})
        yield arch


@pytest.fixture
def emulated(monkeypatch):
    """Moves a NumPy array into the emulator's device memory (the GPU's arrays are CuPy's)."""
    def move(a):
        with monkeypatch.context() as patch:
            patch.setenv("GPUCNN_CUDA_EMULATOR", "1")
            return cuda.to_device(np.ascontiguousarray(a), "cuda")
    return move


@contextlib.contextmanager
def float32_precision(precision):
    gpucnn.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        gpucnn.set_float32_matmul_precision("highest")


def tf32_emulated(arch):
    """Skip unless this GPU has TF32 tensor cores whose arithmetic the emulator reproduces."""
    if int(arch.removeprefix("sm_")) < 80:
        pytest.skip(f"{arch} has no TF32 tensor cores")
    if arch not in build.ARCHES:
        pytest.skip(f"the emulator models no TF32 tensor cores of {arch} (it does {', '.join(build.ARCHES)})")


def on_both(run, arrays, emulated, precision="highest"):
    """run's outputs on the GPU and on the emulator, as NumPy arrays."""
    import cupy
    with float32_precision(precision):
        got = families.outputs(run(cuda_ops, *(cupy.asarray(np.ascontiguousarray(a)) for a in arrays)))
        want = families.outputs(run(cuda_ops, *(emulated(a) for a in arrays)))
    return [cuda.as_numpy(g) for g in got], [cuda.as_numpy(w) for w in want]


def assert_same_bits(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[g.dtype.itemsize]
        differ = np.flatnonzero(g.view(unsigned) != w.view(unsigned))
        assert differ.size == 0, (f"{differ.size} of {g.size} elements differ, first at {differ[0]}: "
                                  f"{g.flat[differ[0]]!r} on the GPU, {w.flat[differ[0]]!r} on the emulator")


@pytest.mark.parametrize("family, call", CALLS, ids=[f"{f.name}: {c.name}" for f, c in CALLS])
def test_gpu_matches_the_emulator(family, call, emulated, emulator_as_this_gpu):
    if family.precision != "highest":
        tf32_emulated(emulator_as_this_gpu)
    got, want = on_both(call.run, call.inputs, emulated, family.precision)
    if call.op in NOT_BIT_IDENTICAL:
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, **CLOSE[g.dtype], err_msg=NOT_BIT_IDENTICAL[call.op])
    else:
        assert_same_bits(got, want)


@pytest.mark.parametrize("mode", ["float32", "float64", "tf32"])
@pytest.mark.parametrize("case", CONV_SHAPES.values(), ids=CONV_SHAPES.keys())
def test_convolution_bits_over_more_tiles(mode, case, emulated, emulator_as_this_gpu):
    if mode == "tf32":
        tf32_emulated(emulator_as_this_gpu)
    dtype = np.float64 if mode == "float64" else np.float32
    precision = "high" if mode == "tf32" else "highest"
    x_shape, w_shape, stride, padding = case
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y_shape = families.conv_output_shape(x_shape, w_shape, stride, padding)
    dy = rng.standard_normal(y_shape).astype(dtype)
    passes = [
        (lambda ops, x, w, b: ops.conv2d_forward(x, w, b, stride, padding), (x, w, b)),
        (lambda ops, dy, w: ops.conv2d_backward_data(dy, w, x_shape, stride, padding), (dy, w)),
        (lambda ops, x, dy: ops.conv2d_backward_weight(x, dy, w_shape, stride, padding), (x, dy)),
        (lambda ops, dy: ops.conv2d_backward_bias(dy), (dy,)),
    ]
    for run, arrays in passes:
        assert_same_bits(*on_both(run, arrays, emulated, precision))

