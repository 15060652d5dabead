"""The op contract (see `gpucnn.backends`) on device "cuda": launches of cuda_kernels/*.cu.

The same functions drive a GPU through `cupy.RawModule` and the CPU through
`gpucnn.emulator.RawModule` (GPUCNN_CUDA_EMULATOR=1): both compile the same .cu text, and
`launch.py` gives both the same grids. A raw kernel sees bare pointers, so before every
launch the inputs are made contiguous, their dtypes and shapes checked, and every scalar
passed as the exact NumPy type of the kernel's parameter (np.int32 for int).
"""
from collections import namedtuple
from importlib import resources

import numpy as np

from .. import checks, cuda
from . import launch

_C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# Each kernel: its .cu file and its template arguments, {T} being float or double and
# {tile} one of launch.GEMM_TILES (each GEMM kernel has an instance per tile).
_KERNELS = {
    "conv2d_forward": ("conv2d.cu", "{T}, {tile}"),
    "conv2d_backward_data_full_rot180": ("conv2d.cu", "{T}, {tile}"),
    "conv2d_backward_weight": ("conv2d.cu", "{T}, {tile}"),
    "add_partial_sums": ("conv2d.cu", "{T}"),
    "conv2d_backward_bias": ("conv2d.cu", f"{{T}}, {launch.REDUCE_BLOCK}"),
    "max_pool2d_forward": ("pool2d.cu", "{T}"),
    "max_pool2d_backward_gather": ("pool2d.cu", "{T}"),
    "avg_pool2d_forward": ("pool2d.cu", "{T}"),
    "avg_pool2d_backward_gather": ("pool2d.cu", "{T}"),
    "relu_forward": ("relu.cu", "{T}"),
    "relu_backward": ("relu.cu", "{T}"),
}
KERNEL_FILES = tuple(dict.fromkeys(filename for filename, _ in _KERNELS.values()))

# NVRTC's defaults, spelled out, except --fmad: the kernels write every multiply-add as an
# explicit fmaf/fma, and nothing else may be contracted, so that a GPU rounds exactly as the
# emulator (g++ -ffp-contract=off) does.
KERNEL_OPTIONS = ("-std=c++17", "--fmad=false", "--prec-div=true", "--prec-sqrt=true")

_modules = {}  # (file name, emulated?) -> compiled module, built once per process


def _raw_module_class(emulated):
    if emulated:
        from ..emulator import RawModule
        return RawModule
    import cupy
    return cupy.RawModule


def kernel_source(filename):
    """The text of one of the package's .cu files."""
    return (resources.files("gpucnn") / "cuda_kernels" / filename).read_text()


def _instance(kernel, c_type, tile=None):
    """The name expression of kernel's instance for c_type (and tile, for the GEMM kernels),
    e.g. "relu_forward<float>", "conv2d_forward<double, 64, 64, 8, 4, 4>"."""
    return f"{kernel}<{_KERNELS[kernel][1].format(T=c_type, tile=tile and tile.template_args)}>"


def _tiles(kernel):
    return launch.GEMM_TILES if "{tile}" in _KERNELS[kernel][1] else (None,)


def name_expressions(filename):
    """Every template instance that the module built from filename provides."""
    return tuple(_instance(k, c, tile) for k, (f, _) in _KERNELS.items() if f == filename
                 for c in _C_TYPES.values() for tile in _tiles(k))


def _module(filename, emulated):
    key = (filename, emulated)
    if key not in _modules:
        # code=, not path=: CuPy's path= loads a compiled cubin/PTX, not source.
        _modules[key] = _raw_module_class(emulated)(
            code=kernel_source(filename), options=KERNEL_OPTIONS, name_expressions=name_expressions(filename)
        )
    return _modules[key]


def _launch(kernel, config, like, args):
    """Run kernel's instance for like's dtype with args, unless the work is empty (config None)."""
    if config is None:
        return
    emulated = isinstance(like, cuda.EmulatedDeviceArray)
    instance = _instance(kernel, _C_TYPES[like.dtype], config.tile)
    function = _module(_KERNELS[kernel][0], emulated).get_function(instance)
    function(config.grid, config.block, args, shared_mem=config.shared_mem)


def _empty(shape, dtype, like):
    """An output on like's device: a CuPy array, or an EmulatedDeviceArray under the emulator
    (whose checking mode then reports a kernel that reads it before some kernel wrote it)."""
    xp = cuda.get_array_module(like)
    out = xp.empty(shape, dtype=dtype)
    if xp is not np:
        return out
    from .. import emulator
    out = out.view(cuda.EmulatedDeviceArray)
    return emulator.mark_uninitialized(out) if emulator.sanitize_enabled() else out


def _ints(*values):
    """Sizes for the kernels' int parameters (offsets are 64-bit; one dimension is not)."""
    too_big = [v for v in values if not -2**31 <= v < 2**31]
    if too_big:
        raise ValueError(f"the CUDA kernels take each size below 2^31, but got {too_big[0]}")
    return tuple(np.int32(v) for v in values)


def _inputs(op, **arrays):
    """The arrays made C-contiguous, after checking they share one float dtype."""
    dtypes = {name: a.dtype for name, a in arrays.items()}
    first = next(iter(arrays))
    for name, dtype in dtypes.items():
        if dtype not in _C_TYPES:
            raise ValueError(f"{op}: expected {name} of dtype float32 or float64, but got {dtype}")
        if dtype != dtypes[first]:
            raise ValueError(f"{op}: {first} dtype ({dtypes[first]}) and {name} dtype ({dtype}) should be the same")
    xp = cuda.get_array_module(*arrays.values())
    return [xp.ascontiguousarray(a) for a in arrays.values()]


def _expect_shape(op, name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: expected {name} of shape {tuple(shape)}, but got {tuple(a.shape)}")


class ConvGeometry(namedtuple("ConvGeometry", "N C H W O KH KW OH OW SH SW PH PW")):
    """A convolution's sizes: conv2d.cu's int parameters, in their order."""

    @property
    def y_shape(self):
        return (self.N, self.O, self.OH, self.OW)


class PoolGeometry(namedtuple("PoolGeometry", "N C H W KH KW SH SW OH OW")):
    """A pooling's sizes: the pooling kernels' int parameters, in their order."""

    @property
    def y_shape(self):
        return (self.N, self.C, self.OH, self.OW)


def _conv_geometry(op, x_shape, w_shape, stride, padding):
    N, C, H, W = x_shape
    O, CW, KH, KW = w_shape
    if CW != C:  # a raw kernel would read past the end of w
        raise ValueError(f"{op}: weight of shape {tuple(w_shape)} has {CW} input channels, but x has {C}")
    (SH, SW), (PH, PW) = stride, padding
    OH, OW = checks.output_size(H, KH, SH, PH), checks.output_size(W, KW, SW, PW)
    return ConvGeometry(N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW)


def conv2d_forward(x, w, b, stride, padding):
    if b is None:
        b = cuda.get_array_module(w).zeros(w.shape[0], dtype=w.dtype)
    xc, wc, bc = _inputs("conv2d_forward", x=x, weight=w, bias=b)
    g = _conv_geometry("conv2d_forward", x.shape, w.shape, stride, padding)
    _expect_shape("conv2d_forward", "bias", b, (g.O,))
    y = _empty(g.y_shape, x.dtype, like=x)
    _launch("conv2d_forward", launch.conv2d_forward(*g.y_shape), x, (xc, wc, bc, y) + _ints(*g))
    return y


def conv2d_backward_data(dy, w, x_shape, stride, padding):
    dyc, wc = _inputs("conv2d_backward_data", dy=dy, weight=w)
    g = _conv_geometry("conv2d_backward_data", x_shape, w.shape, stride, padding)
    _expect_shape("conv2d_backward_data", "dy", dy, g.y_shape)
    dx = _empty(x_shape, dy.dtype, like=dy)
    phases = launch.conv2d_backward_data(g.N, g.C, g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW)
    if any(config is None for _, _, config in phases):  # pixels no launch writes: no tap reaches them
        dx.fill(0)
    for ph, pw, config in phases:  # each writes its own pixels of dx
        _launch("conv2d_backward_data_full_rot180", config, dy, (dyc, wc, dx) + _ints(*g, *ph, *pw))
    return dx


def conv2d_backward_weight(x, dy, w_shape, stride, padding):
    xc, dyc = _inputs("conv2d_backward_weight", x=x, dy=dy)
    w_shape = tuple(w_shape)
    g = _conv_geometry("conv2d_backward_weight", x.shape, w_shape, stride, padding)
    _expect_shape("conv2d_backward_weight", "dy", dy, g.y_shape)
    dw = _empty(w_shape, x.dtype, like=x)
    chunk, chunks = launch.weight_gradient_chunks(*w_shape, g.N * g.OH * g.OW)
    partials = dw if chunks == 1 else _empty((chunks,) + w_shape, x.dtype, like=x)
    _launch("conv2d_backward_weight", launch.conv2d_backward_weight(*w_shape, chunks), x,
            (xc, dyc, partials) + _ints(*g) + (np.int64(chunk),))
    if chunks > 1:
        _launch("add_partial_sums", launch.elementwise(dw.size), x, (partials, dw, np.int32(chunks), np.int64(dw.size)))
    return dw


def conv2d_backward_bias(dy):
    (dyc,) = _inputs("conv2d_backward_bias", dy=dy)
    N, O, OH, OW = dy.shape
    db = _empty((O,), dy.dtype, like=dy)
    _launch("conv2d_backward_bias", launch.conv2d_backward_bias(O), dy, (dyc, db) + _ints(N, O, OH, OW))
    return db


def _pool_geometry(x_shape, kernel, stride):
    N, C, H, W = x_shape
    (KH, KW), (SH, SW) = kernel, stride
    return PoolGeometry(N, C, H, W, KH, KW, SH, SW, checks.output_size(H, KH, SH, 0), checks.output_size(W, KW, SW, 0))


def max_pool2d_forward(x, kernel, stride):
    (xc,) = _inputs("max_pool2d_forward", x=x)
    g = _pool_geometry(x.shape, kernel, stride)
    y = _empty(g.y_shape, x.dtype, like=x)
    argmax = _empty(g.y_shape, np.int32, like=x)
    _launch("max_pool2d_forward", launch.elementwise(y.size), x, (xc, y, argmax) + _ints(*g))
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride):
    (dyc,) = _inputs("max_pool2d_backward", dy=dy)
    if argmax.dtype != np.int32:
        raise ValueError(f"max_pool2d_backward: expected argmax of dtype int32, but got {argmax.dtype}")
    g = _pool_geometry(x_shape, kernel, stride)
    _expect_shape("max_pool2d_backward", "dy", dy, g.y_shape)
    _expect_shape("max_pool2d_backward", "argmax", argmax, dy.shape)
    argmaxc = cuda.get_array_module(argmax).ascontiguousarray(argmax)
    dx = _empty(x_shape, dy.dtype, like=dy)
    _launch("max_pool2d_backward_gather", launch.elementwise(dx.size), dy, (dyc, argmaxc, dx) + _ints(*g))
    return dx


def avg_pool2d_forward(x, kernel, stride):
    (xc,) = _inputs("avg_pool2d_forward", x=x)
    g = _pool_geometry(x.shape, kernel, stride)
    y = _empty(g.y_shape, x.dtype, like=x)
    _launch("avg_pool2d_forward", launch.elementwise(y.size), x, (xc, y) + _ints(*g))
    return y


def avg_pool2d_backward(dy, x_shape, kernel, stride):
    (dyc,) = _inputs("avg_pool2d_backward", dy=dy)
    g = _pool_geometry(x_shape, kernel, stride)
    _expect_shape("avg_pool2d_backward", "dy", dy, g.y_shape)
    dx = _empty(x_shape, dy.dtype, like=dy)
    _launch("avg_pool2d_backward_gather", launch.elementwise(dx.size), dy, (dyc, dx) + _ints(*g))
    return dx


def relu_forward(x):
    (xc,) = _inputs("relu_forward", x=x)
    y = _empty(x.shape, x.dtype, like=x)
    _launch("relu_forward", launch.elementwise(x.size), x, (xc, y, np.int64(x.size)))
    return y


def relu_backward(dy, y):
    dyc, yc = _inputs("relu_backward", dy=dy, y=y)
    _expect_shape("relu_backward", "y", y, dy.shape)
    dx = _empty(dy.shape, dy.dtype, like=dy)
    _launch("relu_backward", launch.elementwise(dy.size), dy, (dyc, yc, dx, np.int64(dy.size)))
    return dx
