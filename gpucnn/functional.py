"""The layers' operations as plain functions on arrays (NumPy on "cpu", CuPy on "cuda").

Each function validates its input (a ValueError worded like PyTorch's, before any kernel
runs) and hands the work to the backend of the array's device. Modules in `gpucnn.nn`
use the same `conv_args` / `pool_args` validation, then keep what their backward needs.
1D ops run as 2D ops with H = 1.
"""
from collections import namedtuple

from . import checks, cuda
from .backends import ops_for

_LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)"}


def as_2d(x, nd):
    """(N, C, L) -> (N, C, 1, L) view for the 2D ops; 2D input unchanged."""
    return x[:, :, None, :] if nd == 1 else x


def from_2d(y, nd):
    return y[:, :, 0, :] if nd == 1 else y


def _lift(t, nd, fill):
    """A 1-tuple of a 1D layer's kernel/stride/padding as the 2D op's (fill, value)."""
    return (fill,) + t if nd == 1 else t


class ConvGeometry(namedtuple("ConvGeometry", "stride padding dilation groups extra")):
    """A convolution's options as the 2D ops take them: stride, padding, dilation (2-tuples)
    and groups, plus `extra`: the rows and columns of zeros that padding='same' adds at the
    end of an even effective kernel's input (PyTorch's rule), which the ops' symmetric
    padding cannot express, so the layer pads them itself (pad_end) and crops dx after."""

    @property
    def options(self):
        """The ops' arguments after (x or dy, w, [shape]): stride, padding, dilation, groups."""
        return self.stride, self.padding, self.dilation, self.groups


PADDING_STRINGS = ("same", "valid")


def conv_options(layer, kernel_size, stride, padding, dilation, groups, nd):
    """Validate a convolution's options, before any input: (kernel_size, stride, padding,
    dilation, groups) as nd-tuples, padding possibly one of PADDING_STRINGS (kept as given)."""
    kernel_size = checks.positive(layer, "kernel_size", checks.tuple_arg(layer, "kernel_size", kernel_size, nd))
    stride = checks.positive(layer, "stride", checks.tuple_arg(layer, "stride", stride, nd))
    dilation = checks.positive(layer, "dilation", checks.tuple_arg(layer, "dilation", dilation, nd))
    groups = checks.positive(layer, "groups", groups)
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(f"{layer}: invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
        if padding == "same" and any(s != 1 for s in stride):
            raise ValueError(f"{layer}: padding='same' is not supported for strided convolutions, "
                             f"but got stride={stride}")
    else:
        padding = checks.non_negative(layer, "padding", checks.tuple_arg(layer, "padding", padding, nd))
    return kernel_size, stride, padding, dilation, groups


def conv_args(layer, x, weight, bias, stride, padding, nd, dilation=1, groups=1):
    """Validate a convolution call; returns its ConvGeometry in the 2D ops' terms."""
    kernel = weight.shape[2:] if hasattr(weight, "shape") and weight.ndim == nd + 2 else (1,) * nd
    _, stride, padding, dilation, groups = conv_options(layer, kernel, stride, padding, dilation, groups, nd)
    checks.float_array(layer, "input", x)
    checks.rank(layer, x, nd + 2, _LAYOUTS[nd])
    checks.array(layer, "weight", weight)
    if weight.ndim != nd + 2:
        raise ValueError(f"{layer}: expected a {nd + 2}D weight, but got weight of shape {checks.shape_str(weight.shape)}")
    if weight.shape[0] % groups:
        raise ValueError(f"{layer}: given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                         f"but got weight of shape {checks.shape_str(weight.shape)}")
    _bias_fits(layer, bias, weight.shape[0], "output channel")
    cuda.check_same_device(layer, input=x, weight=weight, bias=bias)
    checks.same_dtype(layer, x, weight=weight, bias=bias)
    checks.channels(layer, x, weight.shape[1] * groups)
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))  # what a dilated window covers
    if padding == "same":
        totals = tuple(span - 1 for span in spans)  # split as PyTorch: the odd one at the end
        padding, extra = tuple(t // 2 for t in totals), tuple(t % 2 for t in totals)
    else:
        padding, extra = (0,) * nd if padding == "valid" else padding, (0,) * nd
    checks.window_fits(layer, x, spans, padding)
    return ConvGeometry(_lift(stride, nd, 1), _lift(padding, nd, 0), _lift(dilation, nd, 1), groups, _lift(extra, nd, 0))


def pad_end(x, extra):
    """x (N, C, H, W) with extra = (rows, columns) of zeros after its last row and column, on
    x's device; x itself when there are none."""
    if not any(extra):
        return x
    xp = cuda.get_array_module(x)
    (N, C, H, W), (eh, ew) = x.shape, extra
    out = xp.zeros_like(x, shape=(N, C, H + eh, W + ew))  # zeros_like keeps the emulator's array type
    out[:, :, :H, :W] = x
    return out


def _bias_fits(layer, bias, n, per):
    """A bias holds one value per output channel or feature: NumPy would broadcast a stray one."""
    if bias is None:
        return
    checks.array(layer, "bias", bias)
    if tuple(bias.shape) != (n,):
        raise ValueError(
            f"{layer}: expected bias of shape [{n}] (one per {per}), but got bias of shape {checks.shape_str(bias.shape)}"
        )


def pool_options(layer, kernel_size, stride, padding, nd):
    """Validate a pooling's options, before any input: (kernel, stride, padding) as nd-tuples.
    stride=None means kernel_size."""
    kernel = checks.positive(layer, "kernel_size", checks.tuple_arg(layer, "kernel_size", kernel_size, nd))
    stride = kernel if stride is None else checks.positive(layer, "stride", checks.tuple_arg(layer, "stride", stride, nd))
    padding = checks.non_negative(layer, "padding", checks.tuple_arg(layer, "padding", padding, nd))
    checks.pool_padding(layer, kernel, padding)
    return kernel, stride, padding


def pool_args(layer, x, kernel_size, stride, nd, padding=0):
    """Validate a pooling call; returns (kernel, stride, padding) as 2-tuples."""
    kernel, stride, padding = pool_options(layer, kernel_size, stride, padding, nd)
    checks.float_array(layer, "input", x)
    checks.rank(layer, x, nd + 2, _LAYOUTS[nd])
    checks.pool_plane(layer, x.shape)
    checks.window_fits(layer, x, kernel, padding, what="pooling window")
    return _lift(kernel, nd, 1), _lift(stride, nd, 1), _lift(padding, nd, 0)


def _conv(layer, x, weight, bias, stride, padding, dilation, groups, nd):
    g = conv_args(layer, x, weight, bias, stride, padding, nd, dilation, groups)
    y = ops_for(x).conv2d_forward(pad_end(as_2d(x, nd), g.extra), as_2d(weight, nd), bias, *g.options)
    return from_2d(y, nd)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv("conv1d", x, weight, bias, stride, padding, dilation, groups, 1)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv("conv2d", x, weight, bias, stride, padding, dilation, groups, 2)


def _max_pool(layer, x, kernel_size, stride, padding, ceil_mode, nd):
    kernel, stride, padding = pool_args(layer, x, kernel_size, stride, nd, padding)
    y, _ = ops_for(x).max_pool2d_forward(as_2d(x, nd), kernel, stride, padding, bool(ceil_mode))
    return from_2d(y, nd)


def _avg_pool(layer, x, kernel_size, stride, padding, ceil_mode, count_include_pad, nd):
    kernel, stride, padding = pool_args(layer, x, kernel_size, stride, nd, padding)
    y = ops_for(x).avg_pool2d_forward(as_2d(x, nd), kernel, stride, padding, bool(ceil_mode), bool(count_include_pad))
    return from_2d(y, nd)


def max_pool1d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False):
    """ceil_mode is keyword-only: PyTorch's positional order has dilation (not supported) before it."""
    return _max_pool("max_pool1d", x, kernel_size, stride, padding, ceil_mode, 1)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False):
    """ceil_mode is keyword-only: PyTorch's positional order has dilation (not supported) before it."""
    return _max_pool("max_pool2d", x, kernel_size, stride, padding, ceil_mode, 2)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return _avg_pool("avg_pool1d", x, kernel_size, stride, padding, ceil_mode, count_include_pad, 1)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return _avg_pool("avg_pool2d", x, kernel_size, stride, padding, ceil_mode, count_include_pad, 2)


def relu(x):
    checks.float_array("relu", "input", x)
    return ops_for(x).relu_forward(x)


def linear_args(layer, x, weight, bias):
    checks.float_array(layer, "input", x)
    checks.array(layer, "weight", weight)
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        got = x.shape[-1] if x.ndim else "no"
        raise ValueError(
            f"{layer}: expected input{checks.shape_str(x.shape)} to have {weight.shape[1]} features "
            f"in its last dimension (in_features), but got {got} features instead"
        )
    _bias_fits(layer, bias, weight.shape[0], "output feature")
    cuda.check_same_device(layer, input=x, weight=weight, bias=bias)
    checks.same_dtype(layer, x, weight=weight, bias=bias)


def linear(x, weight, bias=None):
    """y = x W^T + b, on any leading shape; matmul runs on BLAS (NumPy) or cuBLAS (CuPy)."""
    linear_args("linear", x, weight, bias)
    y = x @ weight.T
    return y + bias if bias is not None else y


def log_softmax(x, axis=-1):
    xp = cuda.get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy_args(layer, logits, target):
    checks.float_array(layer, "input", logits)
    checks.rank(layer, logits, 2, "(N, C) of class scores")
    checks.array(layer, "target", target)
    cuda.check_same_device(layer, input=logits, target=target)
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"{layer}: expected target of shape {checks.shape_str(logits.shape[:1])} (one class index per "
            f"row of input{checks.shape_str(logits.shape)}), but got target of shape {checks.shape_str(target.shape)}"
        )
    if target.dtype.kind not in "iu":
        raise ValueError(f"{layer}: expected integer class indices as target, but got dtype {target.dtype}")
    C = logits.shape[1]
    if target.size:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{layer}: target {bad} is out of bounds for {C} classes (expected 0 <= target < {C})")


def cross_entropy(logits, target):
    """Mean over the batch of -log softmax(logits)[target], as torch.nn.functional.cross_entropy."""
    cross_entropy_args("cross_entropy", logits, target)
    xp = cuda.get_array_module(logits)
    logp = log_softmax(logits, axis=1)
    return float(-logp[xp.arange(len(target)), target].mean())


def mse_args(layer, x, target):
    checks.float_array(layer, "input", x)
    checks.float_array(layer, "target", target)
    cuda.check_same_device(layer, input=x, target=target)
    if target.shape != x.shape:
        raise ValueError(
            f"{layer}: expected target of the input's shape {checks.shape_str(x.shape)}, "
            f"but got target of shape {checks.shape_str(target.shape)}"
        )


def mse_loss(x, target):
    mse_args("mse_loss", x, target)
    return float(((x - target) ** 2).mean())
