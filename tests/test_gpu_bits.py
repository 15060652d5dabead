"""A GPU and the emulator give the same bits: every kernel's output on CuPy arrays equals, bit
for bit, its output on the emulator from the same .cu text (explicit FMAs, --fmad=false,
IEEE division; docs/emulator.md). Runs where a GPU is lent; skipped elsewhere."""
import numpy as np
import pytest

import gpucnn.backends.cuda as cuda_ops
from gpucnn import cuda

pytestmark = pytest.mark.gpu

SHAPES = {  # x, w, stride, padding: a thin layer, a strided one, one spanning several tiles
    "lenet conv2": ((8, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0)),
    "stride 2, padded": ((4, 3, 17, 15), (8, 3, 3, 3), (2, 2), (1, 1)),
    "wide": ((2, 40, 9, 9), (70, 40, 3, 3), (1, 1), (1, 1)),
}


def emulated(a):
    return np.array(a, order="C").view(cuda.EmulatedDeviceArray)


def both(a):
    """a on the GPU, and a on the emulator."""
    import cupy

    return cupy.asarray(np.ascontiguousarray(a)), emulated(a)


def assert_same_bits(run, *arrays):
    gpu_args, emulated_args = zip(*(both(a) if isinstance(a, np.ndarray) else (a, a) for a in arrays))
    got, want = run(*gpu_args), run(*emulated_args)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        g, w = cuda.as_numpy(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[g.dtype.itemsize]
        mismatched = np.flatnonzero(g.view(unsigned) != w.view(unsigned))
        assert mismatched.size == 0, f"{mismatched.size} elements differ, first at {mismatched[0]}: {g.flat[mismatched[0]]!r} vs {w.flat[mismatched[0]]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SHAPES.values(), ids=SHAPES.keys())
def test_convolution_bits(dtype, case):
    x_shape, w_shape, stride, padding = case
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y = cuda_ops.conv2d_forward(emulated(x), emulated(w), emulated(b), stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    assert_same_bits(lambda x, w, b: cuda_ops.conv2d_forward(x, w, b, stride, padding), x, w, b)
    assert_same_bits(lambda dy, w: cuda_ops.conv2d_backward_data(dy, w, x_shape, stride, padding), dy, w)
    assert_same_bits(lambda x, dy: cuda_ops.conv2d_backward_weight(x, dy, w_shape, stride, padding), x, dy)
    assert_same_bits(cuda_ops.conv2d_backward_bias, dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_and_relu_bits(dtype):
    x = np.random.default_rng(1).standard_normal((4, 3, 13, 11)).astype(dtype)
    for kernel, stride in (((2, 2), (2, 2)), ((3, 3), (2, 2))):
        y, argmax = cuda_ops.max_pool2d_forward(emulated(x), kernel, stride)
        dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
        assert_same_bits(lambda x: cuda_ops.max_pool2d_forward(x, kernel, stride), x)
        assert_same_bits(lambda dy, a: cuda_ops.max_pool2d_backward(dy, a, x.shape, kernel, stride), dy, np.asarray(argmax))
        assert_same_bits(lambda x: cuda_ops.avg_pool2d_forward(x, kernel, stride), x)
        assert_same_bits(lambda dy: cuda_ops.avg_pool2d_backward(dy, x.shape, kernel, stride), dy)
    assert_same_bits(cuda_ops.relu_forward, x)
    assert_same_bits(cuda_ops.relu_backward, x, np.maximum(x, 0))
