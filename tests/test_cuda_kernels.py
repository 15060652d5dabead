"""Every CUDA kernel against the NumPy reference (`gpucnn.backends.cpu`).

Each parity test runs twice: on the CPU emulator (GPUCNN_CUDA_EMULATOR=1), always, and on
a real GPU through CuPy (`gpu` marker), skipped where there is none. Inputs are shuffled
linspaces, so max pooling has no ties except where a test makes them on purpose.
"""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gpucnn.backends.cuda as cuda_ops
from gpucnn.backends.cuda import _kernels, launch
from gpucnn import cuda, nn, optim
from gpucnn.backends import cpu, ops_for
from gpucnn.backends.families import conv_output_shape, shuffled
from gpucnn.emulator import build

# The cuda_device fixture only sets an environment variable: sharing it across examples is safe.
FEW_EXAMPLES = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOLERANCES = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}


@pytest.fixture
def to_cuda(cuda_device):
    """Moves a NumPy array onto the CUDA implementation under test (the emulator, or a GPU)."""
    return lambda a: cuda.to_device(np.ascontiguousarray(a), cuda_device)


def assert_same(got, want, dtype):
    assert cuda.is_cuda_array(got), type(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(cuda.as_numpy(got), want, **TOLERANCES[dtype])


def check_conv(to_cuda, dtype, x_shape, w_shape, stride, padding, dilation=(1, 1), groups=1):
    """All four convolution ops on the CUDA implementation against the NumPy ones."""
    x, w = shuffled(x_shape, dtype, 1), shuffled(w_shape, dtype, 2)
    b = shuffled(w_shape[:1], dtype, 3)
    dy = shuffled(conv_output_shape(x_shape, w_shape, stride, padding, dilation), dtype, 4)
    options = (stride, padding, dilation, groups)
    assert_same(cuda_ops.conv2d_forward(to_cuda(x), to_cuda(w), to_cuda(b), *options),
                cpu.conv2d_forward(x, w, b, *options), dtype)
    assert_same(cuda_ops.conv2d_backward_data(to_cuda(dy), to_cuda(w), x_shape, *options),
                cpu.conv2d_backward_data(dy, w, x_shape, *options), dtype)
    assert_same(cuda_ops.conv2d_backward_weight(to_cuda(x), to_cuda(dy), w_shape, *options),
                cpu.conv2d_backward_weight(x, dy, w_shape, *options), dtype)
    assert_same(cuda_ops.conv2d_backward_bias(to_cuda(dy)), cpu.conv2d_backward_bias(dy), dtype)


CONV_CASES = {  # x (N, C, H, W), w (O, C, KH, KW), stride, padding
    "seed 002: 5x5 image, 3x3 filter": ((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (0, 0)),
    "3 channels, non-square input and kernel": ((2, 3, 7, 5), (4, 3, 3, 2), (1, 1), (1, 0)),
    "5 channels, 1x1 kernel": ((2, 5, 4, 6), (3, 5, 1, 1), (1, 1), (0, 0)),
    "kernel equal to input": ((2, 3, 4, 5), (2, 3, 4, 5), (1, 1), (0, 0)),
    "stride greater than kernel": ((1, 2, 9, 8), (3, 2, 2, 2), (3, 4), (0, 0)),
    "padding not smaller than kernel": ((1, 2, 3, 4), (2, 2, 2, 2), (1, 1), (2, 3)),
    "(H + 2P - K) not divisible by S": ((2, 3, 8, 7), (2, 3, 3, 3), (2, 3), (1, 1)),
    "1D as H = 1": ((2, 3, 1, 11), (4, 3, 1, 3), (1, 2), (0, 1)),
    "channels and taps spanning several tiles": ((1, 17, 5, 5), (18, 17, 3, 3), (1, 1), (1, 1)),
    "weight gradient summed in 3 chunks": ((4, 2, 24, 24), (3, 2, 3, 3), (1, 1), (1, 1)),
    # (dilation, groups) after the padding
    "dilation 2, groups 2": ((2, 4, 9, 8), (6, 2, 3, 3), (1, 1), (2, 2), (2, 2), 2),
    "depthwise, stride and dilation sharing a factor": ((1, 3, 11, 12), (3, 1, 3, 2), (2, 2), (1, 0), (2, 4), 3),
    "groups spanning several tiles": ((1, 34, 5, 5), (36, 17, 3, 3), (1, 1), (1, 1), (1, 1), 2),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d_ops_match_numpy(to_cuda, dtype, case):
    check_conv(to_cuda, dtype, *case)


def test_conv2d_forward_without_bias(to_cuda):
    x, w = shuffled((2, 3, 6, 6), np.float64, 1), shuffled((4, 3, 3, 3), np.float64, 2)
    assert_same(cuda_ops.conv2d_forward(to_cuda(x), to_cuda(w), None, (2, 1), (1, 1)),
                cpu.conv2d_forward(x, w, None, (2, 1), (1, 1)), np.float64)


@st.composite
def conv_geometries(draw):
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    PH, PW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H = draw(st.integers(max(1, KH - 2 * PH), 8))
    W = draw(st.integers(max(1, KW - 2 * PW), 8))
    N, C, O = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return (N, C, H, W), (O, C, KH, KW), stride, (PH, PW)


@FEW_EXAMPLES
@given(geometry=conv_geometries())
def test_conv2d_ops_match_numpy_on_random_geometry(to_cuda, geometry):
    check_conv(to_cuda, np.float64, *geometry)


def check_pools(to_cuda, dtype, x, kernel, stride):
    y_want, argmax_want = cpu.max_pool2d_forward(x, kernel, stride)
    y, argmax = cuda_ops.max_pool2d_forward(to_cuda(x), kernel, stride)
    assert_same(y, y_want, dtype)
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(cuda.as_numpy(argmax), argmax_want)
    dy = shuffled(y_want.shape, dtype, 5)
    assert_same(cuda_ops.max_pool2d_backward(to_cuda(dy), argmax, x.shape, kernel, stride),
                cpu.max_pool2d_backward(dy, argmax_want, x.shape, kernel, stride), dtype)
    assert_same(cuda_ops.avg_pool2d_forward(to_cuda(x), kernel, stride), cpu.avg_pool2d_forward(x, kernel, stride), dtype)
    assert_same(cuda_ops.avg_pool2d_backward(to_cuda(dy), x.shape, kernel, stride),
                cpu.avg_pool2d_backward(dy, x.shape, kernel, stride), dtype)


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [((3, 3), (1, 1), (1, 1), False),
                                                                ((3, 3), (2, 2), (1, 1), True),
                                                                ((2, 3), (1, 2), (0, 1), False)])
def test_max_pool_backward_adds_overlapping_windows_in_the_kernels_order(to_cuda, kernel, stride, padding, ceil_mode):
    """The NumPy scatter and the kernel's gather add a pixel's windows in the same order, from 0:
    the same float32 bits, with gradients of very different magnitudes where order matters."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[0, 0] = 1.0  # ties: every window of this plane picks its first position
    y, argmax = cpu.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    dy = (rng.standard_normal(y.shape) * 10.0 ** rng.integers(-8, 8, y.shape)).astype(np.float32)
    want = cpu.max_pool2d_backward(dy, argmax, x.shape, kernel, stride, padding, ceil_mode)
    got = cuda_ops.max_pool2d_backward(to_cuda(dy), to_cuda(argmax), x.shape, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(cuda.as_numpy(got).view(np.uint32), want.view(np.uint32))


POOL_CASES = {  # x (N, C, H, W), kernel, stride
    "seed 002: 4x4 map, 2x2 windows, stride 2": ((1, 1, 4, 4), (2, 2), (2, 2)),
    "overlapping windows, 3 channels": ((2, 3, 7, 5), (3, 2), (1, 1)),
    "seed 000: size 3 stride 3, 5 channels": ((1, 5, 9, 8), (3, 3), (3, 3)),
    "stride greater than window": ((1, 2, 9, 9), (2, 2), (3, 4)),
    "window equal to input": ((2, 1, 3, 4), (3, 4), (1, 1)),
    "(H - K) not divisible by S": ((1, 2, 8, 7), (3, 2), (2, 3)),
    "1D as H = 1": ((2, 3, 1, 10), (1, 3), (1, 2)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_pool_ops_match_numpy(to_cuda, dtype, case):
    x_shape, kernel, stride = case
    check_pools(to_cuda, dtype, shuffled(x_shape, dtype), kernel, stride)


@FEW_EXAMPLES
@given(N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9),
       KH=st.integers(1, 4), KW=st.integers(1, 4), SH=st.integers(1, 4), SW=st.integers(1, 4))
def test_pool_ops_match_numpy_on_random_geometry(to_cuda, N, C, H, W, KH, KW, SH, SW):
    KH, KW = min(KH, H), min(KW, W)
    check_pools(to_cuda, np.float64, shuffled((N, C, H, W), np.float64), (KH, KW), (SH, SW))


def test_max_pool2d_first_maximum_wins_ties(to_cuda):
    # Few distinct values: most windows hold their maximum more than once; overlapping windows.
    x = np.random.default_rng(0).integers(0, 3, size=(2, 3, 6, 7)).astype(np.float32)
    check_pools(to_cuda, np.float32, x, (3, 3), (1, 2))
    _, argmax = cuda_ops.max_pool2d_forward(to_cuda(np.zeros((1, 1, 2, 2))), (2, 2), (2, 2))
    assert cuda.as_numpy(argmax).item() == 0


def test_max_pool2d_last_nan_wins(to_cuda):
    x = shuffled((1, 2, 5, 5), np.float64)
    x[0, 0, 1, 1] = x[0, 0, 2, 3] = x[0, 1, 0, 0] = np.nan
    x[0, 1, 4, 4] = np.inf
    y_want, argmax_want = cpu.max_pool2d_forward(x, (3, 3), (1, 1))
    y, argmax = cuda_ops.max_pool2d_forward(to_cuda(x), (3, 3), (1, 1))
    np.testing.assert_array_equal(cuda.as_numpy(y), y_want)  # NaN where the window holds one
    np.testing.assert_array_equal(cuda.as_numpy(argmax), argmax_want)
    assert np.isnan(y_want).sum() == 9  # 8 windows meet a NaN of channel 0, 1 window of channel 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_matches_numpy(to_cuda, dtype):
    x = shuffled((2, 3, 4, 5), dtype)
    x.flat[:3] = [0.0, np.nan, -0.0]
    y = cuda_ops.relu_forward(to_cuda(x))
    np.testing.assert_array_equal(cuda.as_numpy(y), cpu.relu_forward(x))
    dy = shuffled(x.shape, dtype, 1)
    y_cpu = cpu.relu_forward(x)
    assert_same(cuda_ops.relu_backward(to_cuda(dy), y), cpu.relu_backward(dy, y_cpu), dtype)


def test_gradients_are_bit_identical_across_runs(to_cuda):
    x, dy = shuffled((4, 3, 20, 20), np.float32, 1), shuffled((4, 5, 20, 20), np.float32, 2)
    pooled = shuffled((4, 3, 18, 18), np.float32, 3)
    runs = []
    for _ in range(2):
        dw = cuda_ops.conv2d_backward_weight(to_cuda(x), to_cuda(dy), (5, 3, 3, 3), (1, 1), (1, 1))
        db = cuda_ops.conv2d_backward_bias(to_cuda(dy))
        _, argmax = cuda_ops.max_pool2d_forward(to_cuda(x), (3, 3), (1, 1))
        dx = cuda_ops.max_pool2d_backward(to_cuda(pooled), argmax, x.shape, (3, 3), (1, 1))
        # depthwise, dilated: chunked per group
        dw_depthwise = cuda_ops.conv2d_backward_weight(to_cuda(x), to_cuda(dy[:, :3]), (3, 1, 3, 3), (1, 1), (2, 2),
                                                       (2, 2), 3)
        runs.append([cuda.as_numpy(a).tobytes() for a in (dw, db, dx, dw_depthwise)])
    assert runs[0] == runs[1]


def test_weight_gradient_chunks_cover_every_position_once():
    assert launch.weight_gradient_chunks(3, 2, 3, 3, 4 * 24 * 24) == (768, 3)
    assert launch.weight_gradient_chunks(512, 512, 3, 3, 10**9)[1] == 1  # enough output tiles already
    assert launch.weight_gradient_chunks(6, 1, 5, 5, 0) == (launch.GEMM_K_SLICE, 1)
    for positions in (1, 1000, 1025, 12345, 10**7):
        chunk, chunks = launch.weight_gradient_chunks(6, 1, 5, 5, positions)
        assert chunk % launch.GEMM_K_SLICE == 0 and (chunks - 1) * chunk < positions <= chunks * chunk


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tile", launch.GEMM_TILES, ids=lambda t: t.template_args.replace(", ", "x"))
def test_every_gemm_tile_computes_every_pass(to_cuda, monkeypatch, dtype, tile):
    # Every pass forced onto one tile, with one block per grid dimension walking all the tiles:
    # ragged edges in m, j and k (k not a multiple of any slice), strides and padding.
    monkeypatch.setattr(launch, "gemm_tile", lambda rows, cols: tile)
    monkeypatch.setattr(launch, "MAX_GRID", 1)
    check_conv(to_cuda, dtype, (2, 5, 9, 7), (70, 5, 3, 2), (2, 1), (1, 1))
    check_conv(to_cuda, dtype, (2, 6, 9, 7), (69, 2, 3, 2), (2, 1), (2, 1), (2, 3), 3)  # per group, too


def test_gemm_tile_follows_the_narrow_side():
    def tile(rows, cols):
        t = launch.gemm_tile(rows, cols)
        return t.rows, t.cols
    assert tile(64 * 28 * 28, 6)[1] == 16       # forward of LeNet's first layer: 6 filters, one column tile
    assert tile(64 * 28 * 28, 1)[1] == 4        # its backward-data: a 1-channel input
    assert tile(6, 1 * 5 * 5)[0] == 16          # its weight gradient: 6 rows (filters)
    assert tile(64 * 56 * 56, 128) == (64, 64)  # a wide layer
    assert all(t.threads % t.k_slice == 0 for t in launch.GEMM_TILES)  # conv2d.cu's SliceLoader


STRIDED_BACKWARD_DATA_CASES = {  # x (N, C, H, W), w (O, C, KH, KW), stride, padding
    "stride 2, 1x1 kernel smaller: phases with no taps": ((2, 3, 9, 7), (4, 3, 1, 1), (2, 2), (0, 0)),
    "stride 2, kernel equal, odd sizes, (H - K) % S != 0": ((1, 2, 9, 7), (3, 2, 2, 2), (2, 2), (0, 0)),
    "stride 2, 7x7 padding 3 (the ResNet stem, smaller)": ((2, 3, 12, 13), (5, 3, 7, 7), (2, 2), (3, 3)),
    "stride 2, padding beyond the stride": ((1, 2, 5, 6), (2, 2, 7, 7), (2, 2), (5, 4)),
    "stride 3, kernel 2 smaller, padding 1": ((1, 2, 10, 11), (3, 2, 2, 2), (3, 3), (1, 1)),
    "stride 3, kernel equal": ((2, 2, 9, 10), (2, 2, 3, 3), (3, 3), (0, 1)),
    "stride 3, kernel 5 larger, padding 2, (H + 2P - K) % S != 0": ((1, 3, 11, 8), (4, 3, 5, 5), (3, 3), (2, 2)),
    "stride 4, kernel 3 smaller": ((1, 2, 13, 9), (3, 2, 3, 3), (4, 4), (1, 0)),
    "stride 4, kernel equal": ((1, 2, 12, 9), (2, 2, 4, 4), (4, 4), (0, 0)),
    "stride 4, kernel 9 larger, padding 3": ((1, 2, 15, 14), (3, 2, 9, 9), (4, 4), (3, 3)),
    "strides (2, 3), kernel (3, 2)": ((2, 3, 8, 11), (3, 3, 3, 2), (2, 3), (1, 0)),
    "input smaller than the stride: phases with no pixels": ((1, 2, 2, 3), (2, 2, 1, 2), (3, 4), (0, 1)),
    "1D as H = 1: kernel 20 stride 4 (the audio layer's 80 and 4, smaller)": ((2, 1, 1, 203), (8, 1, 1, 20), (1, 4), (0, 2)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", STRIDED_BACKWARD_DATA_CASES.values(), ids=STRIDED_BACKWARD_DATA_CASES.keys())
def test_strided_backward_data_by_phases_matches_numpy(to_cuda, monkeypatch, dtype, case):
    # dx starts as NaN, not as whatever memory held: every pixel, those of phases that no tap
    # reaches included, must be written (0 there).
    empty = _kernels.empty
    monkeypatch.setattr(_kernels, "empty", lambda *args, **kwargs: _filled_with_nan(empty(*args, **kwargs)))
    x_shape, w_shape, stride, padding = case
    w, dy = shuffled(w_shape, dtype, 2), shuffled(conv_output_shape(x_shape, w_shape, stride, padding), dtype, 4)
    assert_same(cuda_ops.conv2d_backward_data(to_cuda(dy), to_cuda(w), x_shape, stride, padding),
                cpu.conv2d_backward_data(dy, w, x_shape, stride, padding), dtype)


def _filled_with_nan(a):
    a.fill(np.nan)
    return a


def test_strided_conv1d_layer_matches_numpy_layer(to_cuda):
    # Through the layer API, the audio layer's shape scaled down: kernel 20, stride 4, 1 channel in.
    def layer():
        nn.manual_seed(0)
        return nn.Conv1d(1, 8, 20, stride=4).double()
    x = shuffled((2, 1, 203), np.float64)
    host, dev = layer(), layer().to("cuda")
    y = host(x)
    dy = shuffled(y.shape, np.float64, 1)
    assert_same(dev(to_cuda(x)), y, np.float64)
    assert_same(dev.backward(to_cuda(dy)), host.backward(dy), np.float64)


def test_backward_data_launches_one_product_per_stride_phase_over_its_taps_only():
    def plan(N, C, H, W, O, KH, KW, SH, SW, PH, PW):  # per phase: (r_h, r_w), rows, K = O * taps, launch
        return [((ph.tap, pw.tap), N * ph.pixels * pw.pixels, O * ph.taps * pw.taps, config)
                for ph, pw, config in launch.conv2d_backward_data(N, C, H, W, KH, KW, SH, SW, PH, PW)]
    # The ResNet stem (7x7, stride 2, padding 3): 4 phases of 112x112 pixels, with 4x4, 4x3, 3x4
    # and 3x3 taps: each of the 49 taps in one phase, a quarter of the seeds' reduction per pixel.
    stem = plan(32, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3)
    assert [(r, rows, k) for r, rows, k, _ in stem] == [
        ((0, 0), 32 * 112 * 112, 64 * 16), ((0, 1), 32 * 112 * 112, 64 * 12),
        ((1, 0), 32 * 112 * 112, 64 * 12), ((1, 1), 32 * 112 * 112, 64 * 9)]
    assert all(config == launch.tiled_gemm(rows, 3) for _, rows, _, config in stem)
    # Stride 1: one phase, the whole full convolution.
    assert plan(2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1) == [((0, 0), 2 * 8 * 8, 4 * 9, launch.tiled_gemm(2 * 8 * 8, 3))]
    # Kernel 1 at stride 2: only phase (0, 0) has a tap; the others are not launched (None).
    assert [(r, config is None) for r, _, _, config in plan(1, 2, 5, 5, 2, 1, 1, 2, 2, 0, 0)] == [
        ((0, 0), False), ((0, 1), True), ((1, 0), True), ((1, 1), True)]
    # A 2-row input at stride 3 has no pixels in the third phase: not listed at all.
    assert [r for r, _, _, _ in plan(1, 1, 2, 1, 1, 1, 1, 3, 1, 0, 0)] == [(0, 0), (1, 0)]


@pytest.mark.parametrize("size, kernel, stride, padding, dilation",
                         [(224, 7, 2, 3, 1), (16000, 80, 4, 0, 1), (7, 2, 3, 1, 1), (2, 1, 3, 0, 1), (5, 7, 2, 5, 1),
                          (9, 3, 1, 1, 1), (11, 3, 2, 2, 2), (13, 4, 4, 3, 2), (17, 5, 3, 4, 2), (12, 3, 2, 0, 3),
                          (20, 4, 6, 5, 4), (9, 3, 1, 2, 2)])
def test_stride_phases_split_the_seeds_sum_into_its_nonzero_terms(size, kernel, stride, padding, dilation):
    # Row first + i*S of phase r meets dy row q + i - j*dy_step through tap tap + j*tap_step:
    # exactly the (ih, oh, ky) with ih + padding = oh*S + ky*dilation, each once, over the
    # phases together; phases whose residue no dilated tap reaches have none.
    terms = []
    for r in range(stride):
        p = launch.stride_phase(size, kernel, stride, padding, r, dilation)
        terms += [(p.first + i * stride, p.q + i - j * p.dy_step, p.tap + j * p.tap_step)
                  for i in range(p.pixels) for j in range(p.taps)]
    assert sum(launch.stride_phase(size, kernel, stride, padding, r, dilation).pixels for r in range(stride)) == size
    assert sorted(terms) == sorted((ih, (ih + padding - k * dilation) // stride, k)
                                   for ih in range(size) for k in range(kernel)
                                   if (ih + padding - k * dilation) % stride == 0)


def test_grid_stride_loops_cover_work_beyond_the_grid(to_cuda, monkeypatch):
    monkeypatch.setattr(launch, "MAX_GRID", 1)  # one block per grid dimension does all the work
    check_conv(to_cuda, np.float64, (2, 3, 6, 5), (17, 3, 3, 2), (2, 1), (1, 1))
    check_pools(to_cuda, np.float64, shuffled((2, 3, 7, 6), np.float64), (3, 2), (2, 1))


POOL_GRID_STRIDE_CASES = {  # x (N, C, H, W), kernel, stride: how one 256-thread block's step splits
    "the step carries on every digit": ((3, 8, 11, 9), (3, 3), (2, 1)),  # y: 5x7, step (7, 1, 4); dx: (2, 6, 4)
    "rows longer than the step": ((1, 2, 3, 600), (1, 2), (1, 1)),        # step (0, 0, 256)
    "a column carry makes the row step a whole plane": ((2, 3, 4, 51), (2, 2), (1, 1)),  # y: 3x50, step (1, 2, 6)
}


@pytest.mark.parametrize("case", POOL_GRID_STRIDE_CASES.values(), ids=POOL_GRID_STRIDE_CASES.keys())
def test_pool_kernels_step_their_positions_across_planes_rows_and_columns(to_cuda, monkeypatch, case):
    # One block of 256 threads walks every element, each thread stepping its (plane, row,
    # column) by 256 with carries (pool2d.cu's for_each_element) many times over.
    monkeypatch.setattr(launch, "MAX_GRID", 1)
    x_shape, kernel, stride = case
    check_pools(to_cuda, np.float64, shuffled(x_shape, np.float64), kernel, stride)


def test_empty_batch_needs_no_zero_size_grid(to_cuda):
    x, w = np.zeros((0, 3, 6, 6)), shuffled((4, 3, 3, 3), np.float64)
    y = cuda_ops.conv2d_forward(to_cuda(x), to_cuda(w), None, (1, 1), (1, 1))
    assert y.shape == (0, 4, 6, 6) and cuda.is_cuda_array(y)
    dy = to_cuda(np.zeros((0, 4, 6, 6)))
    assert cuda_ops.conv2d_backward_data(dy, to_cuda(w), x.shape, (1, 1), (1, 1)).shape == x.shape
    assert_same(cuda_ops.conv2d_backward_weight(to_cuda(x), dy, w.shape, (1, 1), (1, 1)), np.zeros(w.shape), np.float64)
    assert_same(cuda_ops.conv2d_backward_bias(dy), np.zeros(4), np.float64)
    y, argmax = cuda_ops.max_pool2d_forward(to_cuda(x), (2, 2), (2, 2))
    assert y.shape == argmax.shape == (0, 3, 3, 3)
    assert cuda_ops.max_pool2d_backward(y, argmax, x.shape, (2, 2), (2, 2)).shape == x.shape
    assert cuda_ops.avg_pool2d_backward(cuda_ops.avg_pool2d_forward(to_cuda(x), (2, 2), (2, 2)),
                                        x.shape, (2, 2), (2, 2)).shape == x.shape
    assert cuda_ops.relu_backward(to_cuda(x), cuda_ops.relu_forward(to_cuda(x))).shape == x.shape


def test_non_contiguous_inputs_are_made_contiguous(to_cuda):
    x, w = shuffled((2, 3, 8, 6), np.float64, 1), shuffled((4, 3, 2, 6), np.float64, 2)
    x_view, w_view = to_cuda(x)[:, :, ::2], to_cuda(w)[..., ::2]
    assert not x_view.flags.c_contiguous and not w_view.flags.c_contiguous
    assert_same(cuda_ops.conv2d_forward(x_view, w_view, None, (1, 1), (0, 0)),
                cpu.conv2d_forward(x[:, :, ::2], w[..., ::2], None, (1, 1), (0, 0)), np.float64)
    assert_same(cuda_ops.max_pool2d_forward(x_view, (2, 2), (1, 1))[0],
                cpu.max_pool2d_forward(x[:, :, ::2], (2, 2), (1, 1))[0], np.float64)


def test_bad_dtypes_and_shapes_are_refused_before_launch(to_cuda):
    x, w = to_cuda(np.zeros((1, 1, 4, 4), np.float32)), to_cuda(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d_forward: x dtype \(float32\) and weight dtype \(float64\)"):
        cuda_ops.conv2d_forward(x, w, None, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="relu_forward: expected x of dtype float32 or float64, but got int64"):
        cuda_ops.relu_forward(to_cuda(np.zeros(3, np.int64)))
    y, argmax = cuda_ops.max_pool2d_forward(x, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="max_pool2d_backward: expected argmax of dtype int32, but got int64"):
        cuda_ops.max_pool2d_backward(y, argmax.astype(np.int64), x.shape, (2, 2), (2, 2))
    with pytest.raises(ValueError, match=r"conv2d_backward_data: expected dy of shape \(1, 1, 2, 2\), but got \(1, 1, 3, 3\)"):
        cuda_ops.conv2d_backward_data(to_cuda(np.zeros((1, 1, 3, 3))), w, (1, 1, 4, 4), (1, 1), (0, 0))
    with pytest.raises(ValueError, match=r"conv2d_forward: weight of shape \(1, 2, 3, 3\) has 2 input channels per group, but x has 1 channels in 1 groups"):
        cuda_ops.conv2d_forward(x, to_cuda(np.zeros((1, 2, 3, 3), np.float32)), None, (1, 1), (0, 0))


def lenet():
    nn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),   # 28x28 -> 14x14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),             # -> 10x10 -> 5x5
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    ).double()


@pytest.mark.parametrize("optimizer", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)],
                         ids=["SGD", "Adam"])
def test_lenet_forward_backward_and_step_match_cpu(to_cuda, optimizer):
    x, target = shuffled((2, 1, 28, 28), np.float64), np.array([3, 7])
    host, dev = lenet(), lenet().to("cuda")
    losses, grads = [], []
    for model, inputs in ((host, (x, target)), (dev, (to_cuda(x), to_cuda(target)))):
        criterion, opt = nn.CrossEntropyLoss(), optimizer(model.parameters())
        out = model(inputs[0])
        losses.append(float(criterion(out, inputs[1])))
        dx = model.backward(criterion.backward())
        grads.append([dx] + [p.grad for p in model.parameters()])
        opt.step()
        losses.append(float(criterion(model(inputs[0]), inputs[1])))
    assert losses[0] == pytest.approx(losses[2], rel=1e-12) and losses[1] == pytest.approx(losses[3], rel=1e-10)
    for want, got in zip(*grads):
        assert_same(got, want, np.float64)
    for p_host, p_dev in zip(host.parameters(), dev.parameters()):
        assert cuda.is_cuda_array(p_dev.data)
        np.testing.assert_allclose(cuda.as_numpy(p_dev.data), p_host.data, rtol=1e-10, atol=1e-12)
    assert all(cuda.is_cuda_array(v) for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))
    assert ops_for(dev[0].weight.data) is cuda_ops


def test_conv1d_model_matches_cpu(to_cuda):
    def model():
        nn.manual_seed(0)
        return nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool1d(2),  # 13 -> 7 -> 3
                             nn.AvgPool1d(2, 1), nn.Flatten(), nn.Linear(4 * 2, 3)).double()      # -> 2
    x, target = shuffled((3, 2, 13), np.float64), shuffled((3, 3), np.float64, 1)
    host, dev = model(), model().to("cuda")
    results = []
    for m, inputs in ((host, (x, target)), (dev, (to_cuda(x), to_cuda(target)))):
        criterion = nn.MSELoss()
        loss = criterion(m(inputs[0]), inputs[1])
        results.append([loss, m.backward(criterion.backward())] + [p.grad for p in m.parameters()])
    assert float(results[0][0]) == pytest.approx(float(results[1][0]), rel=1e-12)
    for want, got in zip(results[0][1:], results[1][1:]):
        assert_same(got, want, np.float64)


def test_a_size_past_the_kernels_int_parameters_is_a_clear_error():
    # No test machine holds a tensor with a 2^31-long side; the check itself is what stands
    # between such a size and an OverflowError (or a silently wrapped int) at launch.
    with pytest.raises(ValueError, match=r"below 2\^31, but got 2147483648"):
        _kernels.ints(1, 2**31)


def test_every_kernel_declares_its_launch_bounds():
    """`__launch_bounds__` on every kernel: ptxas sizes registers for the block it will get, and
    the emulator refuses a launch with a bigger block, as a GPU does."""
    unbounded = [f"{filename}: {k.name}" for filename in cuda_ops.KERNEL_FILES
                 for k in build.kernels(cuda_ops.kernel_source(filename)) if not k.bounds]
    assert unbounded == []


def test_the_elementwise_block_is_the_same_in_the_kernels_and_the_launcher():
    """common.cuh's ELEMENTWISE_BLOCK bounds the kernels that launch.elementwise launches."""
    defined = re.search(r"^#define ELEMENTWISE_BLOCK (\d+)$", _kernels.with_headers('#include "common.cuh"\n', "x.cu"),
                        re.M)
    assert defined and int(defined.group(1)) == launch.ELEMENTWISE_BLOCK


def test_each_module_is_one_text_whose_line_markers_name_the_real_file_and_line():
    """kernel_source pastes our headers in, each once, with no #include left: every line of the
    text is the line of the file that its #line marker names."""
    for filename in cuda_ops.KERNEL_FILES:
        text = cuda_ops.kernel_source(filename)
        assert not re.search(r"^\s*#\s*include", text, re.M), filename
        files, starts = {}, re.findall(r'^#line 1 "([^"]+)"$', text, re.M)
        assert len(starts) == len(set(starts)) and starts[0] == filename, starts  # each file pasted once
        name, line = filename, 1
        for row in text.splitlines():
            marker = re.fullmatch(r'#line (\d+) "([^"]+)"', row)
            if marker:
                name, line = marker.group(2), int(marker.group(1))
                continue
            if name not in files:
                files[name] = (_kernels.kernel_folder() / name).read_text().splitlines()
            original = files[name][line - 1]
            # A header's second include becomes an empty line.
            assert row == original or (row == "" and original.startswith("#include")), (filename, name, line)
            line += 1
