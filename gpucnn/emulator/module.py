"""`RawModule` and `RawKernel` with CuPy's call signatures, running on the CPU.

Every launch is checked the way a GPU does not check it: grid and block sizes against CUDA's
limits, and each argument against the kernel's parameter list as C++ declared it. A real
RawKernel turns a Python int into a long long and a Python float into a double, and ignores
an array's strides; each of those silently corrupts a launch, so here each is a TypeError.
"""
import ctypes
import functools
import re
import threading

import numpy as np

from . import build

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_DYNAMIC_SHARED_BYTES = 48 * 1024
# A compiled module keeps its scheduler state in globals, and ctypes releases the GIL during
# a call: launches from several Python threads take turns.
_LAUNCH_LOCK = threading.Lock()


class RawModule:
    """CUDA source text compiled for the CPU; `get_function(name)` gives its kernels.

    name_expressions name template instances ("conv2d_forward<float>") and C++-linkage kernels;
    extern "C" kernels are found by their plain name, as in CuPy.
    """

    def __init__(self, code=None, *, path=None, options=(), name_expressions=None):
        if path is not None or code is None:
            raise ValueError(
                "RawModule: the CUDA emulator compiles CUDA source text, pass it as code=...; "
                "(on CuPy, path= loads a compiled cubin or PTX file, not .cu source)"
            )
        self.code = code
        self.options = tuple(options)
        self.name_expressions = tuple(name_expressions or ())
        self._entries = list(dict.fromkeys([*build.extern_c_kernels(code), *self.name_expressions]))
        self._kernels = {}

    @functools.cached_property
    def _library(self):
        return ctypes.CDLL(str(build.build(self.code, self.options, self._entries)))

    def get_function(self, name):
        if name not in self._entries:
            known = ", ".join(self._entries) or "none"
            raise ValueError(
                f"RawModule.get_function: no kernel named {name!r} in this module; known kernels: {known} "
                f"(a template kernel, or one not declared extern \"C\", must be listed in name_expressions)"
            )
        if name not in self._kernels:
            self._kernels[name] = RawKernel(self._library, self._entries.index(name), name)
        return self._kernels[name]


class Parameter:
    """One kernel parameter as the compiled wrapper describes it."""

    def __init__(self, kernel, index, line):
        self.kind, constness, dtype, pretty_function = line.split("|", 3)
        self.cpp_type = re.search(r"\[with P = (.*?)[;\]]", pretty_function).group(1)
        self.where = f"{kernel}: argument {index} (parameter type {self.cpp_type})"  # for error messages
        self.const = constness == "const"
        # void* and pointers to structs (float4*, ...) take an array of any dtype.
        self.dtype = np.dtype(dtype) if dtype not in ("", "void") else None


class RawKernel:
    """One kernel of a RawModule: `kernel(grid, block, args, shared_mem=0)`."""

    def __init__(self, library, index, name):
        self.name = name
        self._launch = getattr(library, f"gpucnn_emu_launch_{index}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        self._last_error = library.gpucnn_emu_last_error
        self._last_error.restype = ctypes.c_char_p
        describe = getattr(library, f"gpucnn_emu_signature_{index}")
        describe.restype = ctypes.c_char_p
        self.parameters = [Parameter(name, i, line) for i, line in enumerate(describe().decode().splitlines())]

    def __call__(self, grid, block, args, *, shared_mem=0):
        grid = _dims(self.name, "grid", grid, MAX_GRID)
        block = _dims(self.name, "block", block, MAX_BLOCK)
        threads = block[0] * block[1] * block[2]
        if threads > MAX_THREADS_PER_BLOCK:
            raise ValueError(
                f"{self.name}: a block holds at most {MAX_THREADS_PER_BLOCK} threads, but got block={block} "
                f"({threads} threads)"
            )
        if not isinstance(shared_mem, (int, np.integer)) or not 0 <= shared_mem <= MAX_DYNAMIC_SHARED_BYTES:
            raise ValueError(
                f"{self.name}: shared_mem must be an int from 0 to {MAX_DYNAMIC_SHARED_BYTES} bytes, "
                f"but got shared_mem={shared_mem!r}"
            )
        slots = self._argument_slots(args)
        with _LAUNCH_LOCK:
            failed = self._launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), slots.ctypes.data,
                                  int(shared_mem))
        if failed:
            raise RuntimeError(f"{self.name}: {self._last_error().decode()}")

    def _argument_slots(self, args):
        """One 8-byte slot per parameter holding the exact bytes of its value: an array's data
        pointer, or a scalar in the parameter's type."""
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple of arrays and NumPy scalars, but got {type(args).__name__}")
        if len(args) != len(self.parameters):
            signature = ", ".join(p.cpp_type for p in self.parameters)
            raise TypeError(
                f"{self.name}: the kernel takes {len(self.parameters)} arguments ({signature}), but got {len(args)}"
            )
        slots = np.zeros(max(len(args), 1), np.uint64)
        for i, (param, arg) in enumerate(zip(self.parameters, args)):
            _check(param, arg)
            if param.kind == "pointer":
                slots[i] = arg.ctypes.data
            else:
                slots[i:i + 1].view(param.dtype)[0] = arg
        return slots



def _check(param, arg):
    """Refuse an argument that the kernel would misread through this parameter."""
    where = param.where
    if param.kind == "pointer":
        if not isinstance(arg, np.ndarray):
            raise TypeError(f"{where} must be a NumPy array, but got {type(arg).__module__}.{type(arg).__name__}")
        if param.dtype is not None and arg.dtype != param.dtype:
            raise TypeError(f"{where} needs an array of dtype {param.dtype}, but got dtype {arg.dtype}")
        if not arg.flags.c_contiguous:
            raise TypeError(
                f"{where} needs a C-contiguous array (a kernel ignores strides), but got one with shape "
                f"{arg.shape} and strides {arg.strides}; pass np.ascontiguousarray(...)"
            )
        if not param.const and not arg.flags.writeable:
            raise TypeError(f"{where} is a pointer to writable memory, but got a read-only array")
    elif param.kind == "scalar":
        if not isinstance(arg, np.generic):
            raise TypeError(
                f"{where} needs a NumPy scalar of dtype {param.dtype} (e.g. np.{param.dtype}(...)), but got "
                f"{type(arg).__name__} {arg!r}; CuPy would pass a Python int as long long and a float as double"
            )
        if arg.dtype != param.dtype:
            raise TypeError(f"{where} needs a NumPy scalar of dtype {param.dtype}, but got {arg.dtype} {arg!r}")
    else:
        raise TypeError(f"{where}: the CUDA emulator passes only pointers and arithmetic scalars")


def _dims(kernel, what, value, limits):
    """grid or block as 3 positive ints, as CUDA's dim3 reads an int or a tuple of up to 3."""
    dims = value if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise ValueError(f"{kernel}: {what} must be an int or a tuple of 1 to 3 ints, but got {what}={value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(d <= 0 for d in dims):
        raise ValueError(f"{kernel}: every {what} dimension must be positive (CUDA refuses an empty launch), "
                         f"but got {what}={value!r}")
    if any(d > m for d, m in zip(dims, limits)):
        raise ValueError(f"{kernel}: {what}={value!r} exceeds CUDA's limits {limits}")
    return dims
