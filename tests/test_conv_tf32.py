"""The TF32 convolution path (set_float32_matmul_precision("high")): every pass on the CUDA
emulator, plain and in its checking mode, against NumPy given TF32-rounded inputs, to the
error of float32 accumulation, for the shapes of test_cuda_kernels.CONV_CASES; and the
switch itself: strict float32 by default, float64 never affected."""
import numpy as np
import pytest

import gpucnn
import gpucnn.backends.cuda as cuda_ops
from gpucnn import cuda
from gpucnn.backends import cpu
from gpucnn.backends.cuda import _kernels, launch

from test_cuda_kernels import CONV_CASES, conv_output_shape
from test_emulator_mma import tf32


@pytest.fixture
def precision():
    """Sets the float32 matmul precision for one test, and restores the default after."""
    yield gpucnn.set_float32_matmul_precision
    gpucnn.set_float32_matmul_precision("highest")


@pytest.fixture(params=[False, True], ids=["plain", "checking"])
def emulator(request, monkeypatch):
    """Device "cuda" on the emulator, its kernels compiled afresh with or without the checking mode."""
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    monkeypatch.setenv("GPUCNN_EMULATOR_SANITIZE", "1" if request.param else "0")
    monkeypatch.setattr(_kernels, "_modules", {})
    return lambda a: cuda.to_device(np.ascontiguousarray(a), "cuda")


def check_pass(got, op, rounded, absolute, terms):
    """got against op on the TF32-rounded inputs in float64, within float32 accumulation's
    error over `terms` products: (terms + 4) * 2^-23 of op on the inputs' magnitudes."""
    got = cuda.as_numpy(got)
    assert got.dtype == np.float32
    want, magnitude = op(*rounded), op(*absolute)
    error = np.abs(got - want)
    bound = (terms + 4) * 2.0 ** -23 * magnitude + 1e-30
    assert np.all(error <= bound), f"worst error {error.max():.3g}, {(error / bound).max():.3g} times the bound"


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_every_pass_in_tf32_matches_numpy_on_rounded_inputs(emulator, precision, case):
    precision("high")
    check_case(emulator, *case)


def check_case(to_cuda, x_shape, w_shape, stride, padding, dilation=(1, 1), groups=1):
    """Forward, backward-data and weight gradient on to_cuda's device, in TF32, against NumPy."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[:1]).astype(np.float32)
    y_shape = conv_output_shape(x_shape, w_shape, stride, padding, dilation)
    dy = rng.standard_normal(y_shape).astype(np.float32)
    options = (stride, padding, dilation, groups)
    x64, w64, dy64 = (tf32(a).astype(np.float64) for a in (x, w, dy))
    O, CG, KH, KW = w_shape

    check_pass(cuda_ops.conv2d_forward(to_cuda(x), to_cuda(w), to_cuda(b), *options),
               lambda x, w, b: cpu.conv2d_forward(x, w, b, *options),
               (x64, w64, b.astype(np.float64)), (np.abs(x64), np.abs(w64), np.abs(b.astype(np.float64))),
               CG * KH * KW)
    check_pass(cuda_ops.conv2d_backward_data(to_cuda(dy), to_cuda(w), x_shape, *options),
               lambda dy, w: cpu.conv2d_backward_data(dy, w, x_shape, *options),
               (dy64, w64), (np.abs(dy64), np.abs(w64)), O // groups * KH * KW)
    check_pass(cuda_ops.conv2d_backward_weight(to_cuda(x), to_cuda(dy), w_shape, *options),
               lambda x, dy: cpu.conv2d_backward_weight(x, dy, w_shape, *options),
               (x64, dy64), (np.abs(x64), np.abs(dy64)), y_shape[0] * y_shape[2] * y_shape[3])


def test_tf32_is_opt_in_and_never_touches_float64(monkeypatch, precision):
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    assert gpucnn.get_float32_matmul_precision() == "highest"
    x_shape, w_shape, stride, padding = CONV_CASES["channels and taps spanning several tiles"]
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = np.zeros(w_shape[0])
    device = lambda a, dtype: cuda.to_device(a.astype(dtype), "cuda")

    def forward(dtype):
        return cuda.as_numpy(cuda_ops.conv2d_forward(device(x, dtype), device(w, dtype), device(b, dtype),
                                                     stride, padding))

    strict32, strict64 = forward(np.float32), forward(np.float64)
    precision("high")
    assert gpucnn.get_float32_matmul_precision() == "high"
    np.testing.assert_array_equal(forward(np.float64), strict64)
    fast32 = forward(np.float32)
    want = cpu.conv2d_forward(x, w, b, stride, padding)
    # TF32's 10 mantissa bits show: the strict path is far closer to the float64 result.
    assert np.abs(fast32 - want).max() > 30 * np.abs(strict32 - want).max()
    precision("highest")
    np.testing.assert_array_equal(forward(np.float32), strict32)


def test_precision_names_are_pytorchs(precision):
    for name in ("high", "medium", "highest"):
        precision(name)
        assert gpucnn.get_float32_matmul_precision() == name
    with pytest.raises(ValueError, match="must be one of highest, high, medium, but got 'tf32'"):
        precision("tf32")


@pytest.mark.parametrize("tile", launch.TF32_TILES, ids=lambda t: t.template_args.replace(", ", "x"))
def test_every_tf32_tile_computes_every_pass(monkeypatch, precision, tile):
    # Every pass forced onto one tile, one block per grid dimension walking all the tiles:
    # ragged edges in m, j and k, strides, padding, dilation and groups.
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    monkeypatch.setattr(launch, "tf32_tile", lambda rows, cols: tile)
    monkeypatch.setattr(launch, "MAX_GRID", 1)
    precision("high")
    check_case(lambda a: cuda.to_device(np.ascontiguousarray(a), "cuda"), (2, 5, 9, 7), (70, 5, 3, 2), (2, 1), (1, 1))
    check_case(lambda a: cuda.to_device(np.ascontiguousarray(a), "cuda"), (2, 6, 9, 7), (69, 2, 3, 2), (2, 1), (2, 1),
               (2, 3), 3)
