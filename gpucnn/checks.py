"""Input validation. Every message names the layer, the rule and the value it got,
the way PyTorch words it, and every check runs before any kernel launches."""
import numpy as np

from . import cuda


FLOAT_DTYPES = (np.float32, np.float64)


def shape_str(shape):
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def tuple_arg(layer, name, value, n):
    """An int or an n-tuple of ints as an n-tuple (PyTorch's `_pair`)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        return tuple(int(v) for v in value)
    raise ValueError(f"{layer}: {name} must be an int or a tuple of {n} ints, but got {name}={value!r}")


def positive(layer, name, value):
    values = value if isinstance(value, tuple) else (value,)
    if not isinstance(value, tuple) and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)):
        raise ValueError(f"{layer}: {name} must be a positive int, but got {name}={value!r}")
    if any(v <= 0 for v in values):
        raise ValueError(f"{layer}: {name} must be positive, but got {name}={value}")
    return value


def non_negative(layer, name, value):
    if any(v < 0 for v in value):
        raise ValueError(f"{layer}: {name} must be non-negative, but got {name}={value}")
    return value


def array(layer, name, x):
    # Not "has a shape and a dtype": a torch tensor has both, and would fail later on its dtype.
    if not (isinstance(x, np.ndarray) or cuda.is_cuda_array(x)):
        kind = type(x)
        got = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        raise ValueError(f"{layer}: expected {name} to be a numpy or cupy array, but got {got}")


def float_array(layer, name, x):
    array(layer, name, x)
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{layer}: expected {name} of dtype float32 or float64, but got {x.dtype}")


def rank(layer, x, ndim, layout):
    if x.ndim != ndim:
        raise ValueError(
            f"{layer}: expected {ndim}D input {layout}, but got input of shape {shape_str(x.shape)} ({x.ndim}D)"
        )


def channels(layer, x, expected):
    got = x.shape[1]
    if got != expected:
        raise ValueError(
            f"{layer}: expected input{shape_str(x.shape)} to have {expected} channels, "
            f"but got {got} channels instead"
        )


def same_dtype(layer, x, **params):
    for name, p in params.items():
        if p is not None and p.dtype != x.dtype:
            raise ValueError(
                f"{layer}: input dtype ({x.dtype}) and {name} dtype ({p.dtype}) should be the same; "
                f"convert the input or call .float() / .double() on the layer"
            )


def gradient(layer, dy, shape, dtype):
    """backward's dy must be shaped and typed like forward's output: NumPy would broadcast or
    promote a stray one silently, where a kernel, reading bare pointers, cannot."""
    array(f"{layer}.backward", "dy", dy)
    if tuple(dy.shape) != tuple(shape) or dy.dtype != dtype:
        raise ValueError(
            f"{layer}.backward: expected dy of the output's shape {shape_str(shape)} and dtype {np.dtype(dtype)}, "
            f"but got dy of shape {shape_str(dy.shape)} and dtype {dy.dtype}"
        )


def window_fits(layer, x, kernel, padding, what="kernel size"):
    """The (padded) input must hold at least one window: H + 2P >= K in every spatial dim."""
    spatial = x.shape[2:]
    padded = tuple(s + 2 * p for s, p in zip(spatial, padding))
    if any(k > s for k, s in zip(kernel, padded)):
        sizes = " x ".join(map(str, padded))
        ks = " x ".join(map(str, kernel))
        raise ValueError(
            f"{layer}: calculated padded input size per channel: ({sizes}); {what}: ({ks}); "
            f"{what} can't be greater than actual input size (input shape {shape_str(x.shape)})"
        )


def pool_plane(layer, x_shape):
    """Pooling's windows each hold an input position: a plane without rows or columns has none
    (PyTorch refuses it too; only the batch may be empty)."""
    if any(s == 0 for s in x_shape[2:]):
        raise ValueError(f"{layer}: expected an input with non-zero sizes in its spatial dimensions, "
                         f"but got input of shape {shape_str(x_shape)}")


def pool_padding(layer, kernel, padding):
    """Pooling pads by at most half the window (PyTorch's rule): no window then holds only
    padding, which max pooling could not pick from."""
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ValueError(f"{layer}: pad should be at most half of effective kernel size, "
                             f"but got pad={p}, kernel_size={k}")


def output_size(size, kernel, stride, padding, dilation=1):
    """The seeds' W2 = (W1 - F + 2P) / S + 1, rounded down as in every framework, where a
    filter dilated by D spans F = D*(K - 1) + 1 input positions."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size, kernel, stride, padding, ceil_mode=False):
    """output_size, or in ceil mode rounded up, as PyTorch: then a last window that would
    start past the input and its leading padding (in the trailing padding or beyond) is
    dropped, so every window holds at least one input position."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out
