"""The layers' operations as plain functions on arrays (NumPy on "cpu", CuPy on "cuda").

Each function validates its input (a ValueError worded like PyTorch's, before any kernel
runs) and hands the work to the backend of the array's device. Modules in `gpucnn.nn`
use the same `conv_args` / `pool_args` validation, then keep what their backward needs.
1D ops run as 2D ops with H = 1.
"""
import math
from collections import namedtuple

import numpy as np

from . import checks, cuda, rng
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


def _positive_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0


def adaptive_pool_size(layer, output_size):
    """output_size as a pair, each a positive int or None (the input's size there), as torch."""
    pair = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(pair) != 2 or not all(v is None or _positive_int(v) for v in pair):
        raise ValueError(
            f"{layer}: output_size must be a positive int, or a pair of positive ints or None, "
            f"but got output_size={output_size!r}"
        )
    return tuple(None if v is None else int(v) for v in pair)


def adaptive_pool_args(layer, x, output_size):
    """Validate an adaptive pooling call on (N, C, H, W) or unbatched (C, H, W) input; returns
    the output's (OH, OW), None filled in."""
    size = adaptive_pool_size(layer, output_size)
    checks.float_array(layer, "input", x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{layer}: expected 3D (C, H, W) or 4D (N, C, H, W) input, but got input of shape "
                         f"{checks.shape_str(x.shape)} ({x.ndim}D)")
    if 0 in x.shape[-2:]:
        raise ValueError(f"{layer}: expected input with non-zero height and width, but got input of shape "
                         f"{checks.shape_str(x.shape)}")
    return tuple(x.shape[-2 + i] if v is None else v for i, v in enumerate(size))


def adaptive_avg_pool2d(x, output_size, layer="adaptive_avg_pool2d"):
    """torch.nn.functional.adaptive_avg_pool2d; layer names the caller in errors."""
    size = adaptive_pool_args(layer, x, output_size)
    unbatched = x.ndim == 3
    y = ops_for(x).adaptive_avg_pool2d_forward(x[None] if unbatched else x, size)
    return y[0] if unbatched else y


def batch_norm_args(layer, x, running_mean, running_var, weight, bias, training):
    """Validate a batch normalization call; returns x as (N, C, S) for the backends."""
    checks.float_array(layer, "input", x)
    if x.ndim < 2:
        raise ValueError(f"{layer}: expected input of at least 2 dimensions (N, C, ...), but got input of shape "
                         f"{checks.shape_str(x.shape)}")
    C = x.shape[1]
    per_channel = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, a in per_channel.items():
        if a is None:
            continue
        checks.array(layer, name, a)
        if tuple(a.shape) != (C,):
            raise ValueError(f"{layer}: expected {name} of shape [{C}] (one per channel of input"
                             f"{checks.shape_str(x.shape)}), but got {name} of shape {checks.shape_str(a.shape)}")
    cuda.check_same_device(layer, input=x, **per_channel)
    checks.same_dtype(layer, x, **per_channel)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{layer}: expected running_mean and running_var both, or neither")
    if training and C and x.size // C <= 1:
        raise ValueError(f"{layer}: expected more than 1 value per channel when training, but got input of shape "
                         f"{checks.shape_str(x.shape)}")
    return x.reshape(x.shape[:2] + (math.prod(x.shape[2:]),))


def batch_norm_apply(x3, running_mean, running_var, weight, bias, training, factor, eps):
    """Batch normalization of validated (N, C, S) input; returns (y, mean, invstd, batch_stats),
    what backward needs. With batch statistics (training, or no running statistics) the
    running statistics, if any, move by factor towards the batch's."""
    ops = ops_for(x3)
    batch_stats = training or running_mean is None
    if batch_stats:
        mean, var = ops.batch_norm_statistics(x3)
        if training and running_mean is not None:
            ops.batch_norm_update_running(running_mean, running_var, mean, var, factor, x3.shape[0] * x3.shape[2])
    else:
        mean, var = running_mean, running_var
    invstd = ops.batch_norm_invstd(var, eps)
    C = x3.shape[1]
    if weight is None:
        weight = cuda.to_device(np.ones(C, x3.dtype), cuda.device_of(x3))
    if bias is None:
        bias = cuda.to_device(np.zeros(C, x3.dtype), cuda.device_of(x3))
    return ops.batch_norm_forward(x3, mean, invstd, weight, bias), mean, invstd, batch_stats


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """torch.nn.functional.batch_norm: running_mean and running_var (or None) move in place by momentum."""
    x3 = batch_norm_args("batch_norm", x, running_mean, running_var, weight, bias, training)
    return batch_norm_apply(x3, running_mean, running_var, weight, bias, training, momentum, eps)[0].reshape(x.shape)


def dropout_probability(layer, p):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0 <= p <= 1:
        raise ValueError(f"{layer}: dropout probability has to be between 0 and 1, but got p={p!r}")
    return float(p)


def dropout_constants(p):
    """(threshold, scale) of dropout_apply: an element is kept when the top 24 bits of its
    random word are >= ceil(p * 2^24), which happens with probability 1 - p up to 2^-24, and
    a kept element is scaled by 1/(1-p) (p = 1 keeps nothing, and scales by 0)."""
    return math.ceil(p * 2**24), (1 / (1 - p) if p < 1 else 0.0)


def dropout(x, p=0.5, training=True):
    """torch.nn.functional.dropout: inverted dropout with a mask from gpucnn's Philox stream."""
    p = dropout_probability("dropout", p)
    checks.float_array("dropout", "input", x)
    if not training:
        return x
    seed, call = rng.next_call()
    return ops_for(x).dropout_apply(x, seed, call, *dropout_constants(p))


def relu(x):
    checks.float_array("relu", "input", x)
    return ops_for(x).relu_forward(x)


def leaky_relu_slope(layer, negative_slope):
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.integer, np.floating)) \
            or not np.isfinite(negative_slope):
        raise ValueError(f"{layer}: negative_slope must be a finite number, but got negative_slope={negative_slope!r}")
    return float(negative_slope)


def leaky_relu(x, negative_slope=0.01):
    negative_slope = leaky_relu_slope("leaky_relu", negative_slope)
    checks.float_array("leaky_relu", "input", x)
    return ops_for(x).leaky_relu_forward(x, negative_slope)


def sigmoid(x):
    checks.float_array("sigmoid", "input", x)
    return ops_for(x).sigmoid_forward(x)


def tanh(x):
    checks.float_array("tanh", "input", x)
    return ops_for(x).tanh_forward(x)


def gelu_approximation(layer, approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{layer}: approximate must be 'none' or 'tanh', but got approximate={approximate!r}")
    return approximate


def gelu(x, approximate="none"):
    approximate = gelu_approximation("gelu", approximate)
    checks.float_array("gelu", "input", x)
    return ops_for(x).gelu_forward(x, approximate)


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


def linear_forward(x, weight, bias):
    """y = x W^T + b of checked arrays, on any leading shape, as one 2-D product: the shape
    whose cuBLAS compute type (TF32 or not) CuPy lets the backend choose."""
    y = ops_for(x).matmul(x.reshape(-1, weight.shape[1]), weight.T).reshape(x.shape[:-1] + weight.shape[:1])
    return y + bias if bias is not None else y


def linear(x, weight, bias=None):
    """y = x W^T + b, on any leading shape; matmul runs on BLAS (NumPy) or cuBLAS (CuPy), in
    TF32 for float32 on a GPU where set_float32_matmul_precision("high") allows it."""
    linear_args("linear", x, weight, bias)
    return linear_forward(x, weight, bias)


def log_softmax(x, axis=-1):
    xp = cuda.get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


REDUCTIONS = ("none", "mean", "sum")


def reduction_arg(layer, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{layer}: reduction must be 'none', 'mean' or 'sum', but got reduction={reduction!r}")
    return reduction


def cross_entropy_options(layer, weight, ignore_index, reduction, label_smoothing):
    """Validate CrossEntropyLoss's options, which need no input to be checked."""
    reduction_arg(layer, reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{layer}: label_smoothing must be between 0.0 and 1.0, but got label_smoothing={label_smoothing!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"{layer}: ignore_index must be an int, but got ignore_index={ignore_index!r}")
    if weight is not None:
        checks.float_array(layer, "weight", weight)
        if weight.ndim != 1:
            raise ValueError(f"{layer}: expected a 1D weight (one per class), but got weight of shape {checks.shape_str(weight.shape)}")


def cross_entropy_args(layer, logits, target, weight=None, ignore_index=-100, validate_args=True):
    """Shapes, dtypes and devices; with validate_args, also the target's values, which on a
    CuPy target means waiting for the GPU (PyTorch asserts on the device instead)."""
    checks.float_array(layer, "input", logits)
    checks.rank(layer, logits, 2, "(N, C) of class scores")
    checks.array(layer, "target", target)
    cuda.check_same_device(layer, input=logits, target=target, weight=weight)
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"{layer}: expected target of shape {checks.shape_str(logits.shape[:1])} (one class index per "
            f"row of input{checks.shape_str(logits.shape)}), but got target of shape {checks.shape_str(target.shape)}"
        )
    if target.dtype.kind not in "iu":
        raise ValueError(f"{layer}: expected integer class indices as target, but got dtype {target.dtype}")
    C = logits.shape[1]
    if weight is not None and weight.shape != (C,):
        raise ValueError(
            f"{layer}: weight should be defined either for all {C} classes or no classes, "
            f"but got weight of shape {checks.shape_str(weight.shape)}"
        )
    if not validate_args:
        return
    classes = target[target != ignore_index]  # ignored rows may hold any index, as in torch
    if classes.size:
        lo, hi = int(classes.min()), int(classes.max())
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{layer}: target {bad} is out of bounds for {C} classes (expected 0 <= target < {C})")


def cross_entropy_forward(logits, target, weight, ignore_index, reduction, label_smoothing):
    """The loss (a 0-d array on the logits' device, or an (N,) array for reduction='none') and
    what its backward needs.

    torch's order of operations: the weighted NLL term and the label-smoothing term
    (-sum_c w_c log p_c) are reduced separately, both 'mean's dividing by the summed target
    weights of the rows not ignored, then mixed as (1 - eps) * nll + eps / C * smooth.
    """
    xp = cuda.get_array_module(logits)
    N, C = logits.shape
    logp = log_softmax(logits, axis=1)
    keep = target != ignore_index
    safe = xp.where(keep, target, 0)
    if weight is not None:
        weight = weight.astype(logits.dtype, copy=False)
    # w[y_n] of each row, 0 where ignored: the NLL weight and, summed, 'mean''s denominator.
    w_y = keep.astype(logits.dtype) if weight is None else xp.where(keep, weight[safe], 0).astype(logits.dtype)
    nll = w_y * -logp[xp.arange(N), safe]
    terms = [nll]
    if label_smoothing:
        smooth = -(logp if weight is None else logp * weight).sum(axis=1)
        terms.append(xp.where(keep, smooth, 0).astype(logits.dtype))
    denom = None
    if reduction == "none":
        reduced = terms
    elif reduction == "sum":
        reduced = [t.sum() for t in terms]
    else:
        with np.errstate(invalid="ignore", divide="ignore"):  # every row ignored: nan, as in torch
            denom = w_y.sum()
            reduced = [t.sum() / denom for t in terms]
    loss = reduced[0] if not label_smoothing else (1 - label_smoothing) * reduced[0] + reduced[1] * (label_smoothing / C)
    saved = {"probs": xp.exp(logp), "target": safe, "w_y": w_y, "keep": keep, "weight": weight, "denom": denom}
    return (loss if reduction == "none" else cuda.zero_d(loss, logits)), saved


def cross_entropy_backward(saved, dy, reduction, label_smoothing):
    """d loss / d logits for row n, class j, with eps = label_smoothing and W = sum_c w_c:
    scale_n * (p_j ((1 - eps) w_y + eps W / C) - (1 - eps) w_y [j = y] - eps w_j / C),
    zero for ignored rows; scale_n = dy / sum of w_y ('mean'), dy ('sum') or dy[n] ('none')."""
    probs, w_y, keep, weight = saved["probs"], saved["w_y"], saved["keep"], saved["weight"]
    xp = cuda.get_array_module(probs)
    N, C = probs.shape
    eps = label_smoothing
    picked = (1 - eps) * w_y
    coef = picked
    if eps:
        total = C if weight is None else weight.sum()
        coef = picked + keep.astype(probs.dtype) * (eps * total / C)
    grad = probs * coef[:, None]
    grad[xp.arange(N), saved["target"]] -= picked
    if eps:
        grad -= keep[:, None] * ((eps / C) if weight is None else weight * (eps / C))
    if reduction == "none":
        return grad * dy[:, None]
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return grad * (dy / saved["denom"])
    return grad * dy


def cross_entropy(logits, target, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy with class-index targets: -log softmax(logits)[target],
    weighted per class, rows whose target is ignore_index left out, label smoothing mixing in
    the uniform distribution; a 0-d array of the logits' type and dtype (as torch's 0-d tensor:
    float(loss) or loss.item() is its number, and waits for the device), or an (N,) array for
    reduction='none'."""
    cross_entropy_options("cross_entropy", weight, ignore_index, reduction, label_smoothing)
    cross_entropy_args("cross_entropy", logits, target, weight, ignore_index)
    return cross_entropy_forward(logits, target, weight, ignore_index, reduction, label_smoothing)[0]


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
    """Mean of the squared differences, a 0-d array on x's device (see cross_entropy)."""
    mse_args("mse_loss", x, target)
    return cuda.zero_d(((x - target) ** 2).mean(), x)
