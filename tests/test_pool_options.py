"""Pooling's PyTorch options, padding, ceil_mode and count_include_pad, and PyTorch's max
pick (the last NaN of a window, -0.0 before 0.0), on every device of the `device` fixture:
layers against PyTorch (skipped without it) in float64 and float32, backward against
central differences (always), and bad options refused with a clear ValueError."""
import numpy as np
import pytest

import gpucnn.backends.cuda as cuda_ops
from gpucnn import functional as F, nn
from gpucnn.backends import cpu
from gpucnn.checks import pool_output_size
from gpucnn.cuda import as_numpy, device_of, to_device
from gradcheck import check_backward

TOLERANCES = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=1e-5, atol=1e-6)}

# layer class, input shape, and its arguments
CASES = {
    "max, padding": (nn.MaxPool2d, (2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    "max, ceil mode": (nn.MaxPool2d, (2, 3, 7, 6), dict(kernel_size=2, ceil_mode=True)),
    "max, padding and ceil mode, overlapping": (nn.MaxPool2d, (1, 2, 8, 9), dict(kernel_size=(3, 4), stride=(2, 3),
                                                                                  padding=(1, 2), ceil_mode=True)),
    "max, ceil mode's last window dropped": (nn.MaxPool2d, (1, 2, 6, 6), dict(kernel_size=3, stride=3, padding=1,
                                                                             ceil_mode=True)),
    "max 1D, padding, ceil mode": (nn.MaxPool1d, (2, 3, 10), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    "avg, padding counted": (nn.AvgPool2d, (2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    "avg, padding not counted": (nn.AvgPool2d, (2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1,
                                                                  count_include_pad=False)),
    "avg, ceil mode past the padding, counted": (nn.AvgPool2d, (1, 2, 5, 8), dict(kernel_size=2, stride=2, padding=1,
                                                                                  ceil_mode=True)),
    "avg, ceil mode, not counted": (nn.AvgPool2d, (1, 2, 7, 8), dict(kernel_size=(3, 2), stride=2, padding=(1, 1),
                                                                     ceil_mode=True, count_include_pad=False)),
    "avg 1D, ceil mode": (nn.AvgPool1d, (2, 3, 10), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
}


def tie_free(shape, seed=0):
    """A shuffled linspace: no ties, so max pooling's pick is unambiguous (and has no kinks)."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.linspace(-1, 1, n)).reshape(shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls, shape, args", CASES.values(), ids=CASES.keys())
def test_layer_matches_pytorch(device, cls, shape, args, dtype):
    torch = pytest.importorskip("torch")
    x = tie_free(shape).astype(dtype)
    tx = torch.from_numpy(x).requires_grad_()
    ty = getattr(torch.nn, cls.__name__)(**args)(tx)
    dy = np.random.default_rng(1).standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(dy))
    layer = cls(**args)
    y = layer(to_device(x, device))
    dx = layer.backward(to_device(dy, device))
    for what, ours, want in [("y", y, ty), ("dx", dx, tx.grad)]:
        assert device_of(ours) == device and ours.dtype == dtype and ours.shape == tuple(want.shape), what
        np.testing.assert_allclose(as_numpy(ours), want.detach().numpy(), err_msg=what, **TOLERANCES[dtype])


@pytest.mark.parametrize("cls, shape, args", CASES.values(), ids=CASES.keys())
def test_layer_backward_matches_finite_differences(device, cls, shape, args):
    check_backward(cls(**args), to_device(tie_free(shape), device))


@pytest.mark.parametrize("cls, shape, args", CASES.values(), ids=CASES.keys())
def test_functional_matches_the_layer(device, cls, shape, args):
    x = to_device(tie_free(shape), device)
    function = getattr(F, {nn.MaxPool1d: "max_pool1d", nn.MaxPool2d: "max_pool2d", nn.AvgPool1d: "avg_pool1d",
                           nn.AvgPool2d: "avg_pool2d"}[cls])
    np.testing.assert_array_equal(as_numpy(function(x, **args)), as_numpy(cls(**args)(x)))


def test_count_include_pad_divides_by_the_window_inside_the_padding(device):
    # 1x4 input, 3-wide windows at stride 2, padding 1, ceil mode: windows [-1, 2), [1, 4)
    # and [3, 6), which reaches past the padding (column 4) to column 5: counted, it divides
    # by 2 (its columns up to the padding's edge), not 3; not counted, by 1.
    x = to_device(np.array([[[[1.0, 2.0, 4.0, 8.0]]]]), device)
    counted = nn.AvgPool2d((1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True)(x)
    np.testing.assert_array_equal(as_numpy(counted), [[[[3.0 / 3, 14.0 / 3, 8.0 / 2]]]])
    inside = nn.AvgPool2d((1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True, count_include_pad=False)(x)
    np.testing.assert_array_equal(as_numpy(inside), [[[[3.0 / 2, 14.0 / 3, 8.0 / 1]]]])


def test_max_pool_routes_a_nan_window_to_its_last_nan(device):
    # Issue 12, item 14, as PyTorch (CPU and CUDA): torch gives [0, 0, 0, 1].
    x = to_device(np.array([[[[1.0, np.nan, 3.0, np.nan]]]]), device)
    pool = nn.MaxPool2d((1, 4))
    assert np.isnan(as_numpy(pool(x))).all()
    np.testing.assert_array_equal(as_numpy(pool.backward(to_device(np.ones((1, 1, 1, 1)), device))), [[[[0, 0, 0, 1]]]])
    # NaN first, then a larger number: the NaN stays (no comparison with it is true).
    x = to_device(np.array([[[[np.nan, 2.0, np.nan, 5.0]]]]), device)
    pool(x)
    np.testing.assert_array_equal(as_numpy(pool.backward(to_device(np.ones((1, 1, 1, 1)), device))), [[[[0, 0, 1, 0]]]])


@pytest.mark.parametrize("values, sign, grad", [([-0.0, 0.0], True, [1, 0]), ([0.0, -0.0], False, [1, 0])])
def test_max_pool_keeps_the_first_of_equal_zeros(device, values, sign, grad):
    x = to_device(np.array([[values]], dtype=np.float32), device)
    pool = nn.MaxPool1d(2)
    y = as_numpy(pool(x))
    assert y.item() == 0 and bool(np.signbit(y).item()) == sign
    np.testing.assert_array_equal(as_numpy(pool.backward(to_device(np.ones((1, 1, 1), np.float32), device))), [[grad]])


def test_nan_and_signed_zero_picks_are_pytorchs():
    torch = pytest.importorskip("torch")
    x = np.array([[[[1.0, np.nan, 3.0, np.nan, -0.0, 0.0, -np.inf, -np.inf]]]])
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.nn.functional.max_pool2d(tx, (1, 2), padding=(0, 1))
    ty.backward(torch.ones_like(ty))
    y, argmax = cpu.max_pool2d_forward(x, (1, 2), (1, 2), (0, 1))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(np.signbit(y), np.signbit(ty.detach().numpy()))
    np.testing.assert_array_equal(cpu.max_pool2d_backward(np.ones(y.shape), argmax, x.shape, (1, 2), (1, 2), (0, 1)),
                                  tx.grad.numpy())


def test_cuda_kernels_pick_as_the_numpy_backend(cuda_device):
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, size=(2, 3, 9, 8)).astype(np.float64)  # ties everywhere
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.1] = -0.0
    for kernel, stride, padding, ceil_mode in [((3, 3), (2, 2), (1, 1), True), ((2, 4), (1, 3), (1, 2), False)]:
        y_want, argmax_want = cpu.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
        y, argmax = cuda_ops.max_pool2d_forward(to_device(x, cuda_device), kernel, stride, padding, ceil_mode)
        np.testing.assert_array_equal(as_numpy(y), y_want)
        np.testing.assert_array_equal(np.signbit(as_numpy(y)), np.signbit(y_want))
        np.testing.assert_array_equal(as_numpy(argmax), argmax_want)


def test_output_size_is_pytorchs():
    torch = pytest.importorskip("torch")
    for size in range(1, 12):
        for kernel in range(1, min(size, 5) + 1):
            for stride in range(1, 5):
                for padding in range(kernel // 2 + 1):
                    for ceil_mode in (False, True):
                        want = torch.nn.functional.max_pool1d(torch.zeros(1, 1, size), kernel, stride, padding,
                                                              ceil_mode=ceil_mode).shape[-1]
                        assert pool_output_size(size, kernel, stride, padding, ceil_mode) == want, \
                            (size, kernel, stride, padding, ceil_mode)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.MaxPool2d(3, padding=2),
     r"MaxPool2d: pad should be at most half of effective kernel size, but got pad=2, kernel_size=3"),
    (lambda: nn.AvgPool1d(2, padding=-1), r"AvgPool1d: padding must be non-negative, but got padding=\(-1,\)"),
    (lambda: nn.AvgPool2d(4, padding=(1, 3)),
     r"AvgPool2d: pad should be at most half of effective kernel size, but got pad=3, kernel_size=4"),
])
def test_bad_options_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_calls_are_refused_before_any_kernel(device):
    x = to_device(np.zeros((1, 2, 3, 3)), device)
    with pytest.raises(ValueError, match=r"max_pool2d: pad should be at most half of effective kernel size"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"max_pool1d: expected an input with non-zero sizes in its spatial "
                                         r"dimensions, but got input of shape \[1, 2, 0\]"):
        F.max_pool1d(to_device(np.zeros((1, 2, 0)), device), 2, padding=1)
    with pytest.raises(ValueError, match=r"avg_pool2d: calculated padded input size per channel: \(5 x 5\); "
                                         r"pooling window: \(6 x 6\)"):
        F.avg_pool2d(x, 6, padding=1)


def test_cuda_ops_refuse_an_empty_plane_before_launch(cuda_device):
    # A raw kernel would read x's first position for a window holding none.
    with pytest.raises(ValueError, match=r"max_pool2d_forward: expected an input with non-zero sizes"):
        cuda_ops.max_pool2d_forward(to_device(np.zeros((1, 1, 0, 4)), cuda_device), (2, 2), (2, 2), (1, 1))


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_an_empty_batch_pools_to_an_empty_batch(device, cls):
    pool = cls(3, stride=2, padding=1, ceil_mode=True)
    y = pool(to_device(np.zeros((0, 2, 6, 5)), device))
    assert y.shape == (0, 2, 4, 3) and device_of(y) == device
    dx = pool.backward(to_device(np.zeros(y.shape), device))
    assert dx.shape == (0, 2, 6, 5) and device_of(dx) == device
