"""Every kernel family once, on small shapes: what `python -m gpucnn.doctor` runs on a GPU (or
the emulator) against NumPy, and what tests/test_gpu_bits.py runs on a GPU against the emulator.

A `Call` runs one op of the contract (`gpucnn.backends`) through the backend module it is
given, so one call runs on NumPy, on a GPU and on the emulator alike:

    call.run(ops, *arrays) -> an array, or a tuple of arrays

`inputs` are NumPy arrays; a caller hands each backend copies of them (some ops work in
place). The NumPy reference runs on `reference` where set (the TF32 family: the products'
operands rounded to TF32, all in float64) and its result is compared, cast to the call's
dtype, within `tolerance`. Exact calls (ReLU, max pooling's picks, dropout's mask: selections, or a single
rounding done alike) must match NumPy to the bit.

The shapes are small but reach the kernels' branches: several GEMM tiles, a stride above 1
with its phases, groups and dilation, overlapping and padded pooling windows, ceil mode.
"""
import math
from dataclasses import dataclass

import numpy as np

from ..checks import output_size

TOLERANCES = {np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}
EXACT = dict(rtol=0.0, atol=0.0)
# The TF32 kernels against NumPy on TF32-rounded inputs: float32 accumulation over these
# shapes' at most 162 products per output stays well inside; a kernel that forgot to round
# an operand, or rounded it the wrong way, errs by about 2^-11 per product.
TF32_TOLERANCE = dict(rtol=2e-4, atol=2e-5)

# (x, w, stride, padding, dilation, groups): one layer spanning several tiles at stride 1, one
# strided, padded, dilated and grouped.
CONV_GEOMETRIES = {
    "17 -> 18 channels": ((2, 17, 6, 6), (18, 17, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    "stride 2x1, dilation 1x2, 2 groups": ((2, 4, 9, 8), (6, 2, 3, 3), (2, 1), (1, 1), (1, 2), 2),
}


@dataclass(frozen=True)
class Call:
    op: str          # the contract's op, e.g. "conv2d_forward"
    detail: str      # what distinguishes this call from the family's others: dtype, geometry
    run: object      # run(ops, *arrays)
    inputs: tuple
    tolerance: dict
    reference: tuple = None

    @property
    def name(self):
        return f"{self.op} ({self.detail})"


@dataclass(frozen=True)
class Family:
    name: str
    calls: object               # calls() -> [Call], built when run
    precision: str = "highest"  # set_float32_matmul_precision while it runs


def shuffled(shape, dtype, seed=0):
    """Distinct values in [-1, 1] in random order: max pooling meets no ties (Chainer's inputs)."""
    size = math.prod(shape)
    values = np.linspace(-1, 1, size) if size > 1 else np.full(size, 0.5)
    return np.random.default_rng(seed).permutation(values).reshape(shape).astype(dtype)


def tf32(x):
    """cvt.rna.tf32.f32 in NumPy: 10 mantissa bits kept, rounded to nearest with ties away
    from zero (half a unit of the 10th bit added to the magnitude, then truncated); Inf and
    NaN unchanged."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    return np.where(finite, (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000), bits).view(np.float32)


def conv_output_shape(x_shape, w_shape, stride, padding, dilation=(1, 1)):
    (N, _, H, W), (O, _, KH, KW) = x_shape, w_shape
    return (N, O, output_size(H, KH, stride[0], padding[0], dilation[0]),
            output_size(W, KW, stride[1], padding[1], dilation[1]))


def _conv_calls(dtype, tf32_reference=False):
    calls = []
    for label, (x_shape, w_shape, *options) in CONV_GEOMETRIES.items():
        x, w, b = shuffled(x_shape, dtype, 1), shuffled(w_shape, dtype, 2), shuffled(w_shape[:1], dtype, 3)
        dy = shuffled(conv_output_shape(x_shape, w_shape, *options[:2], options[2]), dtype, 4)
        detail = f"{np.dtype(dtype)}, {label}"
        passes = [
            ("conv2d_forward", lambda ops, x, w, b, o=options: ops.conv2d_forward(x, w, b, *o), (x, w, b)),
            ("conv2d_backward_data",
             lambda ops, dy, w, s=x_shape, o=options: ops.conv2d_backward_data(dy, w, s, *o), (dy, w)),
            ("conv2d_backward_weight",
             lambda ops, x, dy, s=w_shape, o=options: ops.conv2d_backward_weight(x, dy, s, *o), (x, dy)),
        ]
        if tf32_reference:  # the products' operands are rounded, not the bias; the bias gradient has no TF32 path
            rounded = {id(a): tf32(a).astype(np.float64) for a in (x, w, dy)}
            calls += [Call(op, f"tf32, {label}", run, inputs, TF32_TOLERANCE,
                           reference=tuple(rounded.get(id(a), a.astype(np.float64)) for a in inputs))
                      for op, run, inputs in passes]
        else:
            calls += [Call(op, detail, run, inputs, TOLERANCES[np.dtype(dtype)]) for op, run, inputs in passes]
            calls.append(Call("conv2d_backward_bias", detail, lambda ops, dy: ops.conv2d_backward_bias(dy), (dy,),
                              TOLERANCES[np.dtype(dtype)]))
    return calls


def _both_dtypes(calls_for):
    return lambda: [call for dtype in (np.float32, np.float64) for call in calls_for(dtype)]


# Overlapping windows, padding, and a ceil-mode last window hanging over the edge.
POOL = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True)
POOL_X = (2, 3, 10, 7)


def _max_pool_calls(dtype):
    from . import cpu
    x = shuffled(POOL_X, dtype, 5)
    y, argmax = cpu.max_pool2d_forward(x, **POOL)
    dy = shuffled(y.shape, dtype, 6)
    detail = str(np.dtype(dtype))
    return [
        Call("max_pool2d_forward", detail, lambda ops, x: ops.max_pool2d_forward(x, **POOL), (x,), EXACT),
        Call("max_pool2d_backward", detail, lambda ops, dy, a: ops.max_pool2d_backward(dy, a, POOL_X, **POOL),
             (dy, argmax), TOLERANCES[np.dtype(dtype)]),
    ]


def _avg_pool_calls(dtype):
    from . import cpu
    x = shuffled(POOL_X, dtype, 7)
    dy = shuffled(cpu.avg_pool2d_forward(x, **POOL).shape, dtype, 8)
    calls = []
    for count_include_pad in (True, False):
        options = dict(POOL, count_include_pad=count_include_pad)
        detail = f"{np.dtype(dtype)}, count_include_pad={count_include_pad}"
        calls += [
            Call("avg_pool2d_forward", detail, lambda ops, x, o=options: ops.avg_pool2d_forward(x, **o), (x,),
                 TOLERANCES[np.dtype(dtype)]),
            Call("avg_pool2d_backward", detail, lambda ops, dy, o=options: ops.avg_pool2d_backward(dy, POOL_X, **o),
                 (dy,), TOLERANCES[np.dtype(dtype)]),
        ]
    return calls


def _adaptive_pool_calls(dtype):
    x, dy = shuffled((2, 3, 10, 7), dtype, 9), shuffled((2, 3, 4, 3), dtype, 10)
    detail, tolerance = f"{np.dtype(dtype)}, 10x7 -> 4x3", TOLERANCES[np.dtype(dtype)]
    return [
        Call("adaptive_avg_pool2d_forward", detail, lambda ops, x: ops.adaptive_avg_pool2d_forward(x, (4, 3)), (x,),
             tolerance),
        Call("adaptive_avg_pool2d_backward", detail,
             lambda ops, dy: ops.adaptive_avg_pool2d_backward(dy, (2, 3, 10, 7)), (dy,), tolerance),
    ]


def _relu_calls(dtype):
    x, dy = shuffled((3, 4, 5, 6), dtype, 11), shuffled((3, 4, 5, 6), dtype, 12)
    detail = str(np.dtype(dtype))
    return [Call("relu_forward", detail, lambda ops, x: ops.relu_forward(x), (x,), EXACT),
            Call("relu_backward", detail, lambda ops, dy, y: ops.relu_backward(dy, y), (dy, np.maximum(x, 0)), EXACT)]


def _activation_calls(dtype):
    # Beyond [-1, 1]: tanh and erf saturate, exp covers a wide range.
    x, dy = 4 * shuffled((4, 50), dtype, 13), shuffled((4, 50), dtype, 14)
    y = shuffled((4, 50), dtype, 15) / 2 + dtype(0.5)   # an output of sigmoid, in [0, 1]
    tolerance, d = TOLERANCES[np.dtype(dtype)], str(np.dtype(dtype))
    calls = [
        Call("leaky_relu_forward", d, lambda ops, x: ops.leaky_relu_forward(x, 0.01), (x,), tolerance),
        Call("leaky_relu_backward", d, lambda ops, dy, x: ops.leaky_relu_backward(dy, x, 0.01), (dy, x), tolerance),
        Call("sigmoid_forward", d, lambda ops, x: ops.sigmoid_forward(x), (x,), tolerance),
        Call("sigmoid_backward", d, lambda ops, dy, y: ops.sigmoid_backward(dy, y), (dy, y), tolerance),
        Call("tanh_forward", d, lambda ops, x: ops.tanh_forward(x), (x,), tolerance),
        Call("tanh_backward", d, lambda ops, dy, y: ops.tanh_backward(dy, y), (dy, 2 * y - 1), tolerance),
    ]
    for approximate in ("none", "tanh"):
        detail = f"{d}, approximate={approximate}"
        calls += [Call("gelu_forward", detail, lambda ops, x, a=approximate: ops.gelu_forward(x, a), (x,), tolerance),
                  Call("gelu_backward", detail, lambda ops, dy, x, a=approximate: ops.gelu_backward(dy, x, a),
                       (dy, x), tolerance)]
    return calls


def _batchnorm_calls(dtype):
    from . import cpu
    # Channels offset and scaled apart, as real activations are: (N, C, S).
    scale, offset = np.array([1, 2, 0.5, 3], dtype)[:, None], np.array([0, 5, -2, 1], dtype)[:, None]
    x = shuffled((3, 4, 10), dtype, 16) * scale + offset
    dy = shuffled((3, 4, 10), dtype, 17)
    weight, bias = np.linspace(0.5, 2, 4).astype(dtype), np.linspace(-1, 1, 4).astype(dtype)
    mean, var = cpu.batch_norm_statistics(x)
    invstd = cpu.batch_norm_invstd(var, 1e-5)
    dweight, dbias = cpu.batch_norm_backward_reduce(dy, x, mean, invstd)
    running = (np.linspace(0, 1, 4).astype(dtype), np.linspace(1, 2, 4).astype(dtype))
    t, d = TOLERANCES[np.dtype(dtype)], str(np.dtype(dtype))

    def update_running(ops, running_mean, running_var, mean, var):
        ops.batch_norm_update_running(running_mean, running_var, mean, var, 0.1, 30)
        return running_mean, running_var

    calls = [
        Call("batch_norm_statistics", d, lambda ops, x: ops.batch_norm_statistics(x), (x,), t),
        Call("batch_norm_invstd", d, lambda ops, var: ops.batch_norm_invstd(var, 1e-5), (var,), t),
        Call("batch_norm_update_running", d, update_running, (*running, mean, var), t),
        Call("batch_norm_forward", d, lambda ops, *a: ops.batch_norm_forward(*a), (x, mean, invstd, weight, bias), t),
        Call("batch_norm_backward_reduce", d, lambda ops, *a: ops.batch_norm_backward_reduce(*a),
             (dy, x, mean, invstd), t),
    ]
    for batch_stats in (True, False):
        calls.append(Call("batch_norm_backward_data", f"{d}, batch_stats={batch_stats}",
                          lambda ops, *a, s=batch_stats: ops.batch_norm_backward_data(*a, s),
                          (dy, x, mean, invstd, weight, dweight, dbias), t))
    return calls


def _dropout_calls(dtype):
    # p = 0.3: threshold ceil(p 2^24) on the words' top 24 bits; 105 elements end in a partial group of four.
    x = np.random.default_rng(18).uniform(1, 2, (3, 5, 7)).astype(dtype)
    threshold, scale = math.ceil(0.3 * 2**24), 1 / 0.7
    return [Call("dropout_apply", f"{np.dtype(dtype)}, p=0.3",
                 lambda ops, x: ops.dropout_apply(x, 7, 3, threshold, scale), (x,), EXACT)]


def _linear_calls(dtype):
    a, b = shuffled((8, 40), dtype, 19), shuffled((40, 12), dtype, 20)
    return [Call("matmul", f"{np.dtype(dtype)}, 8x40 @ 40x12", lambda ops, a, b: ops.matmul(a, b), (a, b),
                 TOLERANCES[np.dtype(dtype)])]


FAMILIES = (
    Family("conv float32", lambda: _conv_calls(np.float32)),
    Family("conv float64", lambda: _conv_calls(np.float64)),
    Family("conv tf32", lambda: _conv_calls(np.float32, tf32_reference=True), precision="high"),
    Family("max pooling", _both_dtypes(_max_pool_calls)),
    Family("avg pooling", _both_dtypes(_avg_pool_calls)),
    Family("adaptive pooling", _both_dtypes(_adaptive_pool_calls)),
    Family("relu", _both_dtypes(_relu_calls)),
    Family("activations", _both_dtypes(_activation_calls)),
    Family("batchnorm", _both_dtypes(_batchnorm_calls)),
    Family("dropout", _both_dtypes(_dropout_calls)),
    Family("linear", _both_dtypes(_linear_calls)),
)


def mismatch(got, want, tolerance):
    """None when got (NumPy) is want within tolerance (NumPy's allclose, NaN equal to NaN),
    else one line saying how they differ."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"got shape {got.shape} {got.dtype}, expected {want.shape} {want.dtype}"
    if tolerance == EXACT:
        bad = ~((got == want) | (np.isnan(got) & np.isnan(want))) if got.dtype.kind == "f" else got != want
    else:
        bad = ~np.isclose(got, want, equal_nan=True, **tolerance)
    if not bad.any():
        return None
    where = np.unravel_index(np.flatnonzero(bad)[np.argmax(np.abs(got[bad].astype(np.float64) - want[bad]))], got.shape)
    bound = "exactly" if tolerance == EXACT else f"within rtol {tolerance['rtol']:g}, atol {tolerance['atol']:g}"
    return (f"{int(bad.sum())} of {got.size} values differ from NumPy's {bound}; worst at {tuple(map(int, where))}: "
            f"{got[where]!r} against {want[where]!r}")


def outputs(result):
    return result if isinstance(result, tuple) else (result,)
