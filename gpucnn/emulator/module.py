"""`RawModule` and `RawKernel` with CuPy's call signatures, running on the CPU.

Every launch is checked the way a GPU does not check it: grid and block sizes against CUDA's
limits, and each argument against the kernel's parameter list as C++ declared it. A real
RawKernel turns a Python int into a long long and a Python float into a double, and ignores
an array's strides; each of those silently corrupts a launch, so here each is a TypeError.

In the checking mode (`sanitize=True`, or GPUCNN_EMULATOR_SANITIZE=1; see sanitizer.h) each
launch runs on copies of its array arguments, each in a buffer of its own between redzones,
with shadows that record which bytes were written and by whom; what the kernel wrote is
copied back afterwards.
"""
import ctypes
import functools
import re
import shutil
import subprocess
import threading

import numpy as np

from . import build, memory

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_DYNAMIC_SHARED_BYTES = 48 * 1024
# A compiled module keeps its scheduler state in globals, and ctypes releases the GIL during
# a call: launches from several Python threads take turns.
_LAUNCH_LOCK = threading.Lock()
# Launch flag: flush float32 subnormals to zero, as CuPy's -ftz=true makes a GPU do.
_FLUSH_SUBNORMALS = 1


class KernelError(RuntimeError):
    """A launch that a GPU would fail, or that the checking mode caught doing something wrong.

    `check` names what was found: "out-of-bounds", "misaligned", "race", "uninitialized",
    "barrier", "launch" or "assert"; `kernel` the kernel; `file` and `line` where the offending
    access is, where known: `file` the name a `#line` marker gives that part of the source (a
    pasted header's, see gpucnn.backends.cuda._kernels.with_headers), else "kernels.cu", and
    `line` the line in it.
    """

    def __init__(self, message, check, kernel, line=None, file=None):
        super().__init__(message)
        self.check, self.kernel, self.line, self.file = check, kernel, line, file


# The name g++ knows the kernel source by, and the `#line N "file"` markers that name the
# files pasted into it.
_SOURCE = "kernels.cu"
_LINE_MARKER = re.compile(r'^#line (\d+) "([^"]+)"', re.M)


def _source_text(code, file, line):
    """The text of line `line` of `file` in code, following its `#line` markers."""
    at = (_SOURCE, 1)
    for text in code.splitlines():
        marker = _LINE_MARKER.match(text)
        if marker:
            at = (marker.group(2), int(marker.group(1)))
            continue
        if at == (file, line):
            return text.strip()
        at = (at[0], at[1] + 1)
    return ""


class RawModule:
    """CUDA source text compiled for the CPU; `get_function(name)` gives its kernels.

    name_expressions name template instances ("conv2d_forward<float>") and C++-linkage kernels;
    extern "C" kernels are found by their plain name, as in CuPy.
    """

    def __init__(self, code=None, *, path=None, options=(), name_expressions=None, sanitize=None):
        if path is not None or code is None:
            raise ValueError(
                "RawModule: the CUDA emulator compiles CUDA source text, pass it as code=...; "
                "(on CuPy, path= loads a compiled cubin or PTX file, not .cu source)"
            )
        self.code = code
        self.options = tuple(options)
        self.sanitize = build.sanitize_enabled() if sanitize is None else bool(sanitize)
        self.name_expressions = tuple(name_expressions or ())
        self._entries = list(dict.fromkeys([*build.extern_c_kernels(code), *self.name_expressions]))
        self._kernels = {}

    @functools.cached_property
    def _path(self):
        return build.build(self.code, self.options, self._entries, self.sanitize)

    @functools.cached_property
    def _library(self):
        return ctypes.CDLL(str(self._path))

    @functools.cached_property
    def _declarations(self):
        """Each kernel's declaration in the source, by name (for argument names in reports)."""
        return {kernel.name: kernel for kernel in build.kernels(self.code)}

    def get_function(self, name):
        if name not in self._entries:
            known = ", ".join(self._entries) or "none"
            raise ValueError(
                f"RawModule.get_function: no kernel named {name!r} in this module; known kernels: {known} "
                f"(a template kernel, or one not declared extern \"C\", must be listed in name_expressions)"
            )
        if name not in self._kernels:
            self._kernels[name] = RawKernel(self, self._entries.index(name), name)
        return self._kernels[name]


class Parameter:
    """One kernel parameter as the compiled wrapper describes it."""

    def __init__(self, kernel, index, line, name):
        self.kind, constness, dtype, pretty_function = line.split("|", 3)
        self.cpp_type = re.search(r"\[with P = (.*?)[;\]]", pretty_function).group(1)
        self.name = name
        self.where = f"{kernel}: argument {index} (parameter type {self.cpp_type})"  # for error messages
        self.const = constness == "const"
        # void* and pointers to structs (float4*, ...) take an array of any dtype.
        self.dtype = np.dtype(dtype) if dtype not in ("", "void") else None


class RawKernel:
    """One kernel of a RawModule: `kernel(grid, block, args, shared_mem=0)`."""

    def __init__(self, module, index, name):
        library = module._library
        self.name = name
        self._module = module
        self._launch = getattr(library, f"gpucnn_emu_launch_{index}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        self._last_error = library.gpucnn_emu_last_error
        self._last_error.restype = ctypes.c_char_p
        self._last_check = library.gpucnn_emu_last_check
        self._last_check.restype = ctypes.c_char_p
        describe = getattr(library, f"gpucnn_emu_signature_{index}")
        describe.restype = ctypes.c_char_p
        declaration = module._declarations.get(name.split("<")[0].strip())
        self.parameters = [
            Parameter(name, i, line, declaration.parameter_name(i) if declaration else f"#{i}")
            for i, line in enumerate(describe().decode().splitlines())
        ]
        floats = {p.dtype for p in self.parameters if p.dtype is not None and p.dtype.kind == "f"}
        self._flags = _FLUSH_SUBNORMALS if floats == {np.dtype(np.float32)} else 0

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
            if self._module.sanitize:
                with memory.Checked(self._module._library, self.parameters, args, slots):
                    failed = self._run(grid, block, slots, shared_mem)
            else:
                failed = self._run(grid, block, slots, shared_mem)
            if failed:
                check = self._last_check().decode() or "launch"
                message, file, line = self._last_error().decode(), None, None
                if self._module.sanitize:
                    file, line = self._source_line()
                    if line:
                        text = _source_text(self._module.code, file, line)
                        where = f"line {line} of the kernel source" if file == _SOURCE else f"{file}:{line}"
                        message += f"\n  at {where}: {text}"
        if failed:
            raise KernelError(f"{self.name}: {message}", check, self.name, line, file)

    def _run(self, grid, block, slots, shared_mem):
        return self._launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), slots.ctypes.data,
                            int(shared_mem), self._flags)

    def _source_line(self):
        """(file, line) of the access the checking mode reported, in the kernel source or a
        file its `#line` markers name, from the debug information (addr2line); (None, None)
        if unknown."""
        pc_of = self._module._library.gpucnn_emu_last_pc
        pc_of.restype = ctypes.c_uint64
        pc = pc_of()
        if not pc or shutil.which("addr2line") is None:
            return None, None
        result = subprocess.run(["addr2line", "-i", "-e", str(self._module._path), hex(pc)], capture_output=True,
                                text=True)
        files = {_SOURCE, *(name for _, name in _LINE_MARKER.findall(self._module.code))}
        for location in result.stdout.splitlines():  # innermost inlined frame first
            match = re.match(r"(?:.*/)?([^/]*):(\d+)", location)
            if match and match.group(1) in files:
                return match.group(1), int(match.group(2))
        return None, None

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
