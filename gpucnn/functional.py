"""The layers' operations as plain functions on arrays (NumPy on "cpu", CuPy on "cuda").

Each function validates its input (a ValueError worded like PyTorch's, before any kernel
runs) and hands the work to the backend of the array's device. Modules in `gpucnn.nn`
use the same `conv_args` / `pool_args` validation, then keep what their backward needs.
1D ops run as 2D ops with H = 1.
"""
import numpy as np

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


def conv_args(layer, x, weight, bias, stride, padding, nd):
    """Validate a convolution call; returns (stride, padding) as the 2D ops' 2-tuples."""
    stride = checks.positive(layer, "stride", checks.tuple_arg(layer, "stride", stride, nd))
    padding = checks.non_negative(layer, "padding", checks.tuple_arg(layer, "padding", padding, nd))
    checks.float_array(layer, "input", x)
    checks.rank(layer, x, nd + 2, _LAYOUTS[nd])
    checks.array(layer, "weight", weight)
    if weight.ndim != nd + 2:
        raise ValueError(f"{layer}: expected a {nd + 2}D weight, but got weight of shape {checks.shape_str(weight.shape)}")
    _bias_fits(layer, bias, weight.shape[0], "output channel")
    cuda.check_same_device(layer, input=x, weight=weight, bias=bias)
    checks.same_dtype(layer, x, weight=weight, bias=bias)
    checks.channels(layer, x, weight.shape[1])
    checks.window_fits(layer, x, weight.shape[2:], padding)
    return _lift(stride, nd, 1), _lift(padding, nd, 0)


def _bias_fits(layer, bias, n, per):
    """A bias holds one value per output channel or feature: NumPy would broadcast a stray one."""
    if bias is None:
        return
    checks.array(layer, "bias", bias)
    if tuple(bias.shape) != (n,):
        raise ValueError(
            f"{layer}: expected bias of shape [{n}] (one per {per}), but got bias of shape {checks.shape_str(bias.shape)}"
        )


def pool_args(layer, x, kernel_size, stride, nd):
    """Validate a pooling call; returns (kernel, stride) as 2-tuples. stride=None means kernel_size."""
    kernel = checks.positive(layer, "kernel_size", checks.tuple_arg(layer, "kernel_size", kernel_size, nd))
    stride = kernel if stride is None else checks.positive(layer, "stride", checks.tuple_arg(layer, "stride", stride, nd))
    checks.float_array(layer, "input", x)
    checks.rank(layer, x, nd + 2, _LAYOUTS[nd])
    checks.window_fits(layer, x, kernel, (0,) * nd, what="pooling window")
    return _lift(kernel, nd, 1), _lift(stride, nd, 1)


def _conv(layer, x, weight, bias, stride, padding, nd):
    stride, padding = conv_args(layer, x, weight, bias, stride, padding, nd)
    y = ops_for(x).conv2d_forward(as_2d(x, nd), as_2d(weight, nd), bias, stride, padding)
    return from_2d(y, nd)


def conv1d(x, weight, bias=None, stride=1, padding=0):
    return _conv("conv1d", x, weight, bias, stride, padding, 1)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    return _conv("conv2d", x, weight, bias, stride, padding, 2)


def _max_pool(layer, x, kernel_size, stride, nd):
    kernel, stride = pool_args(layer, x, kernel_size, stride, nd)
    y, _ = ops_for(x).max_pool2d_forward(as_2d(x, nd), kernel, stride)
    return from_2d(y, nd)


def _avg_pool(layer, x, kernel_size, stride, nd):
    kernel, stride = pool_args(layer, x, kernel_size, stride, nd)
    return from_2d(ops_for(x).avg_pool2d_forward(as_2d(x, nd), kernel, stride), nd)


def max_pool1d(x, kernel_size, stride=None):
    return _max_pool("max_pool1d", x, kernel_size, stride, 1)


def max_pool2d(x, kernel_size, stride=None):
    return _max_pool("max_pool2d", x, kernel_size, stride, 2)


def avg_pool1d(x, kernel_size, stride=None):
    return _avg_pool("avg_pool1d", x, kernel_size, stride, 1)


def avg_pool2d(x, kernel_size, stride=None):
    return _avg_pool("avg_pool2d", x, kernel_size, stride, 2)


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


def cross_entropy_args(layer, logits, target, weight=None, ignore_index=-100):
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
    classes = target[target != ignore_index]  # ignored rows may hold any index, as in torch
    if classes.size:
        lo, hi = int(classes.min()), int(classes.max())
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{layer}: target {bad} is out of bounds for {C} classes (expected 0 <= target < {C})")


def cross_entropy_forward(logits, target, weight, ignore_index, reduction, label_smoothing):
    """The loss (float, or an (N,) array for reduction='none') and what its backward needs.

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
    return (loss if reduction == "none" else float(loss)), saved


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
    the uniform distribution; a float, or an (N,) array for reduction='none'."""
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
    mse_args("mse_loss", x, target)
    return float(((x - target) ** 2).mean())
