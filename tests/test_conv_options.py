"""Conv1d/Conv2d's PyTorch options, dilation, groups (depthwise included), padding='same' and
'valid', on every device of the `device` fixture (NumPy, the CUDA kernels emulated or on a
GPU): layers against PyTorch (skipped without it) in float64 and float32, backward against
central differences and the CUDA ops against the adjoint identity (always), and bad options
refused with a clear ValueError."""
import numpy as np
import pytest

import gpucnn
import gpucnn.backends.cuda as cuda_ops
from gpucnn import functional as F, nn
from gpucnn.backends.cuda import launch
from gpucnn.checks import output_size
from gpucnn.cuda import as_numpy, device_of, to_device
from gradcheck import check_backward

TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}

# layer class, (N, C, *spatial), out_channels, kernel_size, and the options under test
LAYER_CASES = {
    "dilation 2": (nn.Conv2d, (2, 3, 9, 8), 4, 3, dict(padding=2, dilation=2)),
    "dilation (3, 2), stride (2, 3)": (nn.Conv2d, (2, 2, 13, 14), 3, (3, 2), dict(stride=(2, 3), padding=(1, 0),
                                                                                  dilation=(3, 2))),
    "stride 2 and dilation 2: phases no tap reaches": (nn.Conv2d, (1, 2, 11, 10), 2, 3, dict(stride=2, dilation=2)),
    "groups 2": (nn.Conv2d, (2, 4, 7, 7), 6, 3, dict(padding=1, groups=2)),
    "groups 3, stride 2, dilation 2": (nn.Conv2d, (1, 6, 11, 10), 3, 3, dict(stride=2, padding=(2, 1), dilation=2,
                                                                             groups=3)),
    "depthwise 3x3": (nn.Conv2d, (2, 5, 8, 8), 5, 3, dict(padding=1, groups=5)),
    "depthwise, multiplier 2, stride 2": (nn.Conv2d, (2, 3, 9, 9), 6, 5, dict(stride=2, padding=2, groups=3)),
    "same, odd kernel": (nn.Conv2d, (2, 3, 6, 7), 2, 3, dict(padding="same")),
    "same, even kernel: the extra row and column at the end": (nn.Conv2d, (2, 3, 6, 7), 2, (2, 4),
                                                               dict(padding="same")),
    "same, even kernel, dilation 3, groups 3": (nn.Conv2d, (1, 3, 8, 7), 3, 2, dict(padding="same", dilation=3,
                                                                                   groups=3)),
    "same, odd effective kernel from even dilation": (nn.Conv2d, (1, 2, 7, 7), 2, 2, dict(padding="same", dilation=2)),
    "valid": (nn.Conv2d, (2, 3, 6, 7), 2, 3, dict(padding="valid", stride=2)),
    "1D depthwise, dilation 4": (nn.Conv1d, (2, 4, 40), 4, 3, dict(padding=4, dilation=4, groups=4)),
    "1D same, even kernel": (nn.Conv1d, (2, 2, 9), 4, 4, dict(padding="same", groups=2)),
}


def build(cls, shape, out, kernel, options, dtype):
    layer = cls(shape[1], out, kernel, **options)
    return layer.double() if dtype == np.float64 else layer


# PyTorch warns that it copies the input for padding='same' with an even kernel: so do we.
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls, shape, out, kernel, options", LAYER_CASES.values(), ids=LAYER_CASES.keys())
def test_layer_matches_pytorch(device, cls, shape, out, kernel, options, dtype):
    torch = pytest.importorskip("torch")
    gpucnn.manual_seed(0)
    layer = build(cls, shape, out, kernel, options, dtype)
    theirs = getattr(torch.nn, cls.__name__)(shape[1], out, kernel, **options).to(torch.float64 if dtype == np.float64
                                                                                    else torch.float32)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()}, strict=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    tx = torch.from_numpy(x).requires_grad_()
    ty = theirs(tx)
    dy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(dy))

    layer.to(device)
    y = layer(to_device(x, device))
    dx = layer.backward(to_device(dy, device))
    for what, ours, want in [("y", y, ty), ("dx", dx, tx.grad), ("dw", layer.weight.grad, theirs.weight.grad),
                             ("db", layer.bias.grad, theirs.bias.grad)]:
        assert device_of(ours) == device, what
        assert ours.dtype == dtype and ours.shape == tuple(want.shape), what
        np.testing.assert_allclose(as_numpy(ours), want.detach().numpy(), err_msg=what, **TOLERANCES[dtype])


@pytest.mark.parametrize("cls, shape, out, kernel, options", LAYER_CASES.values(), ids=LAYER_CASES.keys())
def test_layer_backward_matches_finite_differences(device, cls, shape, out, kernel, options):
    gpucnn.manual_seed(0)
    layer = build(cls, shape, out, kernel, options, np.float64).to(device)
    check_backward(layer, to_device(np.random.default_rng(1).standard_normal(shape), device))


def test_functional_matches_the_layer(device):
    gpucnn.manual_seed(0)
    layer = nn.Conv2d(4, 6, (2, 3), padding="same", dilation=(2, 1), groups=2).double().to(device)
    x = to_device(np.random.default_rng(1).standard_normal((2, 4, 7, 6)), device)
    y = F.conv2d(x, layer.weight.data, layer.bias.data, padding="same", dilation=(2, 1), groups=2)
    np.testing.assert_array_equal(as_numpy(y), as_numpy(layer(x)))


def test_same_padding_keeps_the_size_and_pads_the_end():
    # An even kernel (2): one zero column, after the input. A filter of [1, 0] then reads
    # x[i] at output i, and the last output reads the zero: torch's rule.
    layer = nn.Conv1d(1, 1, 2, padding="same", bias=False).double()
    layer.weight.data[...] = [[[1.0, 0.0]]]
    x = np.arange(1.0, 6.0)[None, None]
    np.testing.assert_array_equal(layer(x), x)
    layer.weight.data[...] = [[[0.0, 1.0]]]
    np.testing.assert_array_equal(layer(x), [[[2.0, 3.0, 4.0, 5.0, 0.0]]])


def test_state_dict_and_repr_are_pytorchs():
    layer = nn.Conv2d(6, 4, 3, padding="same", dilation=2, groups=2, bias=False)
    assert layer.weight.data.shape == (4, 3, 3, 3)
    assert list(layer.state_dict()) == ["weight"]
    assert repr(layer) == "Conv2d(6, 4, kernel_size=(3, 3), stride=(1, 1), padding=same, dilation=(2, 2), groups=2, bias=False)"


# (N, C, H, W), (O, KH, KW), stride, padding, dilation, groups
OP_CASES = [
    ((2, 4, 9, 8), (6, 3, 3), (1, 1), (2, 2), (2, 2), 2),
    ((1, 6, 11, 10), (3, 3, 2), (2, 2), (2, 1), (2, 3), 3),
    ((2, 3, 12, 13), (6, 3, 3), (3, 2), (0, 1), (3, 2), 3),  # stride 3, dilation 3: a single phase has taps
    ((1, 2, 10, 9), (2, 4, 2), (4, 2), (3, 1), (2, 2), 1),  # gcd(stride, dilation) = 2: half the phases get 0
    ((1, 4, 1, 30), (4, 1, 5), (1, 3), (0, 4), (1, 2), 4),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", OP_CASES)
def test_cuda_ops_are_adjoint_to_forward(cuda_device, x_shape, w_shape, stride, padding, dilation, groups):
    # <conv(x, w), g> = <x, backward_data(g, w)> = <w, backward_weight(x, g)>, exactly, in float64.
    rng = np.random.default_rng(0)
    (N, C, H, W), (O, KH, KW) = x_shape, w_shape
    x, w = rng.standard_normal(x_shape), rng.standard_normal((O, C // groups, KH, KW))
    g = rng.standard_normal((N, O, output_size(H, KH, stride[0], padding[0], dilation[0]),
                             output_size(W, KW, stride[1], padding[1], dilation[1])))
    options = (stride, padding, dilation, groups)
    dev = lambda a: to_device(a, cuda_device)  # noqa: E731
    y = as_numpy(cuda_ops.conv2d_forward(dev(x), dev(w), None, *options))
    dx = as_numpy(cuda_ops.conv2d_backward_data(dev(g), dev(w), x_shape, *options))
    dw = as_numpy(cuda_ops.conv2d_backward_weight(dev(x), dev(g), w.shape, *options))
    assert y.shape == g.shape
    np.testing.assert_allclose(np.vdot(x, dx), np.vdot(y, g), rtol=1e-12)
    np.testing.assert_allclose(np.vdot(w, dw), np.vdot(y, g), rtol=1e-12)


def test_grouped_weight_gradient_chunks_and_grid_stride_groups(cuda_device, monkeypatch):
    # Enough positions for several weight-gradient chunks per group; then one block per grid
    # dimension, so that blockIdx.z walks every (group, chunk) and every group in turn.
    from gpucnn.backends import cpu
    rng = np.random.default_rng(0)
    x, w, dy = rng.standard_normal((2, 4, 34, 34)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal((2, 6, 32, 32))
    assert launch.weight_gradient_chunks(6, 2, 3, 3, 2 * 32 * 32, 2)[1] > 1
    options = ((1, 1), (1, 1), (2, 2), 2)
    want = [cpu.conv2d_forward(x, w, None, *options), cpu.conv2d_backward_data(dy, w, x.shape, *options),
            cpu.conv2d_backward_weight(x, dy, w.shape, *options)]
    dev = lambda a: to_device(a, cuda_device)  # noqa: E731
    for max_grid in (launch.MAX_GRID, 1):
        monkeypatch.setattr(launch, "MAX_GRID", max_grid)
        got = [cuda_ops.conv2d_forward(dev(x), dev(w), None, *options),
               cuda_ops.conv2d_backward_data(dev(dy), dev(w), x.shape, *options),
               cuda_ops.conv2d_backward_weight(dev(x), dev(dy), w.shape, *options)]
        for ours, theirs in zip(got, want):
            np.testing.assert_allclose(as_numpy(ours), theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(4, 6, 3, groups=3), r"Conv2d: in_channels must be divisible by groups, but got in_channels=4, groups=3"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), r"Conv2d: out_channels must be divisible by groups, but got out_channels=6, groups=4"),
    (lambda: nn.Conv2d(4, 4, 3, groups=0), r"Conv2d: groups must be positive, but got groups=0"),
    (lambda: nn.Conv2d(4, 4, 3, dilation=0), r"Conv2d: dilation must be positive, but got dilation=\(0, 0\)"),
    (lambda: nn.Conv1d(4, 4, 3, dilation=(1, 2)), r"Conv1d: dilation must be an int or a tuple of 1 ints"),
    (lambda: nn.Conv2d(4, 4, 3, stride=2, padding="same"),
     r"Conv2d: padding='same' is not supported for strided convolutions, but got stride=\(2, 2\)"),
    (lambda: nn.Conv2d(4, 4, 3, padding="full"), r"Conv2d: invalid padding string 'full', should be one of"),
    (lambda: nn.Conv2d(4, 4, 3, padding_mode="reflect"),
     r"Conv2d: only padding_mode='zeros' is supported, but got padding_mode='reflect'"),
])
def test_bad_options_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_calls_are_refused_before_any_kernel(device):
    x = to_device(np.zeros((1, 4, 5, 5)), device)
    w = to_device(np.zeros((6, 2, 3, 3)), device)
    with pytest.raises(ValueError, match=r"conv2d: expected input\[1, 4, 5, 5\] to have 6 channels, but got 4"):
        F.conv2d(x, w, groups=3)
    with pytest.raises(ValueError, match=r"conv2d: given groups=4, expected weight to be divisible by 4 at dimension 0"):
        F.conv2d(x, w, groups=4)
    with pytest.raises(ValueError, match=r"conv2d: calculated padded input size per channel: \(5 x 5\); "
                                         r"kernel size: \(7 x 7\)"):
        F.conv2d(x, w, groups=2, dilation=3)  # a 3x3 filter dilated by 3 spans 7x7
    with pytest.raises(ValueError, match=r"conv2d: padding='same' is not supported for strided convolutions"):
        F.conv2d(x, w, groups=2, padding="same", stride=(1, 2))


def test_cuda_ops_refuse_groups_that_do_not_fit(cuda_device):
    x = to_device(np.zeros((1, 4, 5, 5)), cuda_device)
    with pytest.raises(ValueError, match=r"conv2d_forward: groups=3 must be positive and divide both 4 input and 6"):
        cuda_ops.conv2d_forward(x, to_device(np.zeros((6, 2, 3, 3)), cuda_device), None, (1, 1), (0, 0), (1, 1), 3)
    with pytest.raises(ValueError, match=r"conv2d_forward: weight of shape \(6, 1, 3, 3\) has 1 input channels per "
                                         r"group, but x has 4 channels in 2 groups"):
        cuda_ops.conv2d_forward(x, to_device(np.zeros((6, 1, 3, 3)), cuda_device), None, (1, 1), (0, 0), (1, 1), 2)
