"""What the CUDA kernel families share: loading the .cu files, launching, checking inputs.

A raw kernel sees bare pointers, so before every launch the inputs are made contiguous,
their dtypes and shapes checked, and every scalar passed as the exact NumPy type of the
kernel's parameter (np.int32 for int). Each family module declares its own kernels
(`declare`), so a new family adds a module and touches nothing here.
"""
import re
from importlib import resources
from pathlib import Path

import numpy as np

from ... import cuda
from . import _module_cache, launch

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# NVRTC's defaults, spelled out, except --fmad: the kernels write every multiply-add as an
# explicit fmaf/fma, and nothing else may be contracted, so that a GPU rounds exactly as the
# emulator (g++ -ffp-contract=off) does.
KERNEL_OPTIONS = ("-std=c++17", "--fmad=false", "--prec-div=true", "--prec-sqrt=true")

# Each kernel: its .cu file and its template arguments, {T} being float or double, {tile}
# one of launch.GEMM_TILES (each GEMM kernel has an instance per tile) and {tf32_tile} one of
# launch.TF32_TILES (the TF32 kernels, float only, have no {T}).
_kernels = {}
# Both tables are keyed by device: None for the emulator, else the id of the GPU that CuPy
# launches on (the current one). A module is compiled for its device's arch, and GPUs of one
# process may differ in arch; a RawKernel keeps a Function per device itself
# (RawKernel._kernel, cupy/_core/raw.pyx, v13.6.0 and v14.2.0).
_modules = {}  # (file name, device) -> (RawModule, {name expression: its name in the module})
# (kernel, dtype, tile, device) -> the instance's RawKernel, made once: CuPy's get_function
# builds a new RawKernel at every call (device queries, a cache look-up, cuModuleGetFunction).
_functions = {}


def declare(filename, kernels):
    """Register the kernels {name: template arguments} that cuda_kernels/filename defines."""
    for name, template in kernels.items():
        if name in _kernels:
            raise ValueError(f"kernel {name} is declared twice: in {_kernels[name][0]} and {filename}")
        _kernels[name] = (filename, template)


def kernel_files():
    """The .cu files of every declared kernel, each once, in order of declaration."""
    return tuple(dict.fromkeys(filename for filename, _ in _kernels.values()))


def kernel_folder():
    """The folder of the package's kernel files. A wheel has them in gpucnn/cuda_kernels; in a
    source tree that is a link to the top-level cuda_kernels/, which a checkout without
    symbolic links turns into a one-line text file: then the top-level folder is read."""
    folder = resources.files("gpucnn") / "cuda_kernels"
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[3] / "cuda_kernels"
    return folder


def kernel_source(filename):
    """The compile-ready text of one of the package's .cu files: its own text with the
    project headers it includes pasted in (with_headers), which NVRTC, nvcc and the emulator
    all compile as it is."""
    folder = kernel_folder()
    if not (folder / filename).is_file():
        raise RuntimeError(f"gpucnn: the CUDA kernel file {filename} is missing from {folder}; reinstall gpucnn")
    return with_headers((folder / filename).read_text(), filename, folder)


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*(?:"([^"]*)"|<([^>]*)>)[^\n]*$', re.M)


def with_headers(text, name, folder=None):
    """text (of the file called name) with each `#include "header.cuh"` line replaced by the
    header's text from folder (kernel_folder() by default), whose own includes are pasted in
    turn, each header once. `#line` markers name the real file and line of every line
    (`#line 1 "common.cuh"` before a header's text, `#line N "conv2d.cu"` after it), so
    compilers' errors, and the emulator's checking mode, point into the files themselves.
    Kernel files include our headers only: a system or CUDA header (`#include <mma.h>`) is
    an error, since NVRTC has none on a pip-only install."""
    folder = kernel_folder() if folder is None else folder
    pasted = set()

    def paste(text, name, chain):
        out, last = [], 0
        for match in _INCLUDE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            header, system = match.groups()
            if system is not None:
                raise ValueError(f"{name}:{line}: #include <{system}>: kernel files include only the project's "
                                 f"headers (#include \"name.cuh\", from {folder})")
            if header in chain:
                raise ValueError(f"{name}:{line}: #include \"{header}\" includes itself, through "
                                 f"{' -> '.join(chain + (header,))}")
            if not (folder / header).is_file():
                raise RuntimeError(f"gpucnn: {name}:{line} includes \"{header}\", which is missing from {folder}; "
                                   f"reinstall gpucnn")
            out.append(text[last:match.start()])
            if header not in pasted:  # a second include of a header adds nothing, as #pragma once
                pasted.add(header)
                body = paste((folder / header).read_text(), header, chain + (header,))
                out.append(f'#line 1 "{header}"\n{body}' + ("" if body.endswith("\n") else "\n")
                           + f'#line {line + 1} "{name}"')
            last = match.end()
        return "".join(out) + text[last:]

    return f'#line 1 "{name}"\n' + paste(text, name, (name,))


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


def _module(filename, device):
    """The module built from filename for device, compiled once per process (on a GPU, once
    per machine: _module_cache), and the name its get_function takes for each name expression."""
    key = (filename, device)
    if key not in _modules:
        source, names = kernel_source(filename), name_expressions(filename)
        if device is None:
            from ...emulator import RawModule
            _modules[key] = (RawModule(code=source, options=KERNEL_OPTIONS, name_expressions=names),
                             {name: name for name in names})
        else:
            _modules[key] = _module_cache.load(filename, source, KERNEL_OPTIONS, names)
    return _modules[key]


def launch_kernel(kernel, config, like, args):
    """Run kernel's instance for like's dtype with args, unless the work is empty (config None)."""
    if config is None:
        return
    emulated = isinstance(like, cuda.EmulatedDeviceArray)
    device = None if emulated else cuda.cupy_if_loaded().cuda.runtime.getDevice()
    key = (kernel, like.dtype, config.tile, device)
    function = _functions.get(key)
    if function is None:
        module, names = _module(_kernels[kernel][0], device)
        function = _functions[key] = module.get_function(names[_instance(kernel, C_TYPES[like.dtype], config.tile)])
    if emulated:  # the emulator's kernels take the device memory itself
        args = tuple(cuda.memory(a) if isinstance(a, cuda.EmulatedDeviceArray) else a for a in args)
    function(config.grid, config.block, args, shared_mem=config.shared_mem)


def empty(shape, dtype, like):
    """An output on like's device: a CuPy array, or an EmulatedDeviceArray under the emulator
    (whose checking mode then reports a kernel that reads it before some kernel wrote it)."""
    out = cuda.get_array_module(like).empty(shape, dtype=dtype)
    if not isinstance(out, cuda.EmulatedDeviceArray):
        return out
    from ... import emulator
    if emulator.sanitize_enabled():
        emulator.mark_uninitialized(cuda.memory(out))
    return out


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
