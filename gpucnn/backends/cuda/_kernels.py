"""What the CUDA kernel families share: loading the .cu files, launching, checking inputs.

A raw kernel sees bare pointers, so before every launch the inputs are made contiguous,
their dtypes and shapes checked, and every scalar passed as the exact NumPy type of the
kernel's parameter (np.int32 for int). Each family module declares its own kernels
(`declare`), so a new family adds a module and touches nothing here.
"""
from importlib import resources
from pathlib import Path

import numpy as np

from ... import cuda
from . import launch

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# NVRTC's defaults, spelled out, except --fmad: the kernels write every multiply-add as an
# explicit fmaf/fma, and nothing else may be contracted, so that a GPU rounds exactly as the
# emulator (g++ -ffp-contract=off) does.
KERNEL_OPTIONS = ("-std=c++17", "--fmad=false", "--prec-div=true", "--prec-sqrt=true")

# Each kernel: its .cu file and its template arguments, {T} being float or double, {tile}
# one of launch.GEMM_TILES (each GEMM kernel has an instance per tile) and {tf32_tile} one of
# launch.TF32_TILES (the TF32 kernels, float only, have no {T}).
_kernels = {}
_modules = {}  # (file name, emulated?) -> compiled module, built once per process


def declare(filename, kernels):
    """Register the kernels {name: template arguments} that cuda_kernels/filename defines."""
    for name, template in kernels.items():
        if name in _kernels:
            raise ValueError(f"kernel {name} is declared twice: in {_kernels[name][0]} and {filename}")
        _kernels[name] = (filename, template)


def kernel_files():
    """The .cu files of every declared kernel, each once, in order of declaration."""
    return tuple(dict.fromkeys(filename for filename, _ in _kernels.values()))


def _raw_module_class(emulated):
    if emulated:
        from ...emulator import RawModule
        return RawModule
    import cupy
    return cupy.RawModule


def kernel_source(filename):
    """The text of one of the package's .cu files. A wheel has them in gpucnn/cuda_kernels; in
    a source tree that is a link to the top-level cuda_kernels/, which a checkout without
    symbolic links turns into a one-line text file: then the top-level folder is read."""
    folder = resources.files("gpucnn") / "cuda_kernels"
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[3] / "cuda_kernels"
    if not (folder / filename).is_file():
        raise RuntimeError(f"gpucnn: the CUDA kernel file {filename} is missing from {folder}; reinstall gpucnn")
    return (folder / filename).read_text()


def _instance(kernel, c_type, tile=None):
    """The name expression of kernel's instance for c_type (and tile, for the GEMM kernels),
    e.g. "relu_forward<float>", "conv2d_forward<double, 64, 64, 8, 4, 4>"."""
    arguments = tile and tile.template_args
    return f"{kernel}<{_kernels[kernel][1].format(T=c_type, tile=arguments, tf32_tile=arguments)}>"


def _tiles(kernel):
    template = _kernels[kernel][1]
    return launch.TF32_TILES if "{tf32_tile}" in template else launch.GEMM_TILES if "{tile}" in template else (None,)


def name_expressions(filename):
    """Every template instance that the module built from filename provides, each once."""
    return tuple(dict.fromkeys(_instance(k, c, tile) for k, (f, _) in _kernels.items() if f == filename
                               for c in C_TYPES.values() for tile in _tiles(k)))


def _module(filename, emulated):
    key = (filename, emulated)
    if key not in _modules:
        # code=, not path=: CuPy's path= loads a compiled cubin/PTX, not source.
        _modules[key] = _raw_module_class(emulated)(
            code=kernel_source(filename), options=KERNEL_OPTIONS, name_expressions=name_expressions(filename)
        )
    return _modules[key]


def launch_kernel(kernel, config, like, args):
    """Run kernel's instance for like's dtype with args, unless the work is empty (config None)."""
    if config is None:
        return
    emulated = isinstance(like, cuda.EmulatedDeviceArray)
    instance = _instance(kernel, C_TYPES[like.dtype], config.tile)
    function = _module(_kernels[kernel][0], emulated).get_function(instance)
    function(config.grid, config.block, args, shared_mem=config.shared_mem)


def empty(shape, dtype, like):
    """An output on like's device: a CuPy array, or an EmulatedDeviceArray under the emulator
    (whose checking mode then reports a kernel that reads it before some kernel wrote it)."""
    xp = cuda.get_array_module(like)
    out = xp.empty(shape, dtype=dtype)
    if xp is not np:
        return out
    from ... import emulator
    out = out.view(cuda.EmulatedDeviceArray)
    return emulator.mark_uninitialized(out) if emulator.sanitize_enabled() else out


def ints(*values):
    """Sizes for the kernels' int parameters (offsets are 64-bit; one dimension is not)."""
    too_big = [v for v in values if not -2**31 <= v < 2**31]
    if too_big:
        raise ValueError(f"the CUDA kernels take each size below 2^31, but got {too_big[0]}")
    return tuple(np.int32(v) for v in values)


def inputs(op, **arrays):
    """The arrays made C-contiguous, after checking they share one float dtype."""
    dtypes = {name: a.dtype for name, a in arrays.items()}
    first = next(iter(arrays))
    for name, dtype in dtypes.items():
        if dtype not in C_TYPES:
            raise ValueError(f"{op}: expected {name} of dtype float32 or float64, but got {dtype}")
        if dtype != dtypes[first]:
            raise ValueError(f"{op}: {first} dtype ({dtypes[first]}) and {name} dtype ({dtype}) should be the same")
    xp = cuda.get_array_module(*arrays.values())
    return [xp.ascontiguousarray(a) for a in arrays.values()]


def expect_shape(op, name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: expected {name} of shape {tuple(shape)}, but got {tuple(a.shape)}")
