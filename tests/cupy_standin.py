"""A stand-in `cupy` for the host path of gpucnn's CUDA backend: compiling and loading kernel
modules, finding their kernels, launching them, and asking the runtime about the driver and
the GPUs. It follows the signatures of CuPy 13 and 14 for exactly those calls
(cupy/_core/raw.pyx, cupy/_core/core.pyx, cupy/cuda/compiler.py, cupy_backends/cuda/api/
runtime.pyx at v13.6.0 and v14.2.0), Cython's typed parameters included (`tuple options`
refuses a list), so this path runs on every CI run without a GPU.

Its NVRTC "compiles" a source into a fake binary that lists the lowered names of the name
expressions; `#error` in the source fails the compile with an NVRTC-style log. A module loaded
from a file (`RawModule(path=...)`) refuses a file that its NVRTC did not write, and its
get_function takes lowered names only, as a real cubin's does. Everything is counted.
"""
import json
import re
import sys
import types

BINARY_MAGIC = b"STANDIN-CUBIN\n"


def lowered(expression):
    """A mangled name for a name expression, as NVRTC's nvrtcGetLoweredName gives (not the
    Itanium mangling, but one name per expression and never the expression itself)."""
    return f"_Z{len(expression)}{re.sub(r'[^A-Za-z0-9]', '_', expression)}"


class CompileException(Exception):
    """cupy.cuda.compiler.CompileException(msg, source, name, options, backend='nvrtc'):
    str() is NVRTC's log."""

    def __init__(self, msg, source, name, options, backend="nvrtc"):
        self._msg, self.source, self.name, self.options, self.backend = msg, source, name, options, backend
        super().__init__()

    def __str__(self):
        return self._msg


class CUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError(status): `status` and 'name: text'."""
    NAMES = {35: ("cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"),
             100: ("cudaErrorNoDevice", "no CUDA-capable device is detected")}

    def __init__(self, status):
        self.status = status
        name, text = self.NAMES.get(status, ("cudaErrorUnknown", "unknown error"))
        super().__init__(f"{name}: {text}")


def _tuple(name, value):
    if not isinstance(value, tuple):  # Cython's `tuple options`
        raise TypeError(f"Argument '{name}' has incorrect type (expected tuple, got {type(value).__name__})")
    return value


class StandIn:
    """One stand-in CuPy and what was done with it. version picks the behaviour that differs:
    13.3 to 14.0 add the runtime wheel's headers in compiler._get_extra_include_dir_opts."""

    def __init__(self, version="14.2.0", *, arch="90", nvrtc=(12, 9), driver=12090, runtime=12090, devices=1,
                 device_count_error=None):
        self.version, self.arch, self.nvrtc = version, arch, nvrtc
        self.driver, self.runtime, self.devices, self.device_count_error = driver, runtime, devices, device_count_error
        self.device = 0  # the current device; arch is its compute capability
        self.compiles = []          # (source, options, name expressions) of each NVRTC compile
        self.loaded_files = []      # paths that RawModule(path=...) loaded
        self.code_modules = []      # the RawModule(code=...) made
        self.get_function_calls = 0
        self.launches = []          # (lowered name, grid, block, args, shared_mem)

    # NVRTC through cupy.cuda.compiler

    def compile_using_nvrtc(self, source, options=(), arch=None, filename="kern.cu", name_expressions=None,
                            log_stream=None, cache_in_memory=False, jitify=None, method=None):
        options = _tuple("options", options) + (f"-arch=sm_{arch or self.arch}",)
        self.compiles.append((source, options, tuple(name_expressions or ())))
        match = re.search(r"^#error (.*)$", source, re.M)
        if match:
            line = source.count("\n", 0, match.start()) + 1
            log = (f"{filename}({line}): error: #error directive: {match[1]}\n\n"
                   f"1 error detected in the compilation of \"{filename}\".\n")
            raise CompileException(log, source, filename, options)
        mapping = {name: lowered(name) for name in name_expressions or ()}
        return BINARY_MAGIC + json.dumps({"functions": sorted(mapping.values())}).encode(), mapping

    # RawModule / RawKernel

    def raw_module(self, *, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                   enable_cooperative_groups=False, name_expressions=None, jitify=None):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if name_expressions is not None and code is None:
            raise ValueError("need CUDA C++ code for the requested kernels")
        return RawModule(self, code, path, _tuple("options", options), name_expressions)

    def modules(self):
        """{module name: module} to put in sys.modules."""
        standin = self
        runtime = types.ModuleType("cupy.cuda.runtime")
        runtime.CUDARuntimeError = CUDARuntimeError

        def getDeviceCount():
            if standin.device_count_error is not None:
                raise CUDARuntimeError(standin.device_count_error)
            return standin.devices

        runtime.getDeviceCount = getDeviceCount
        runtime.driverGetVersion = lambda: standin.driver
        runtime.runtimeGetVersion = lambda: standin.runtime
        runtime.getDevice = lambda: standin.device

        nvrtc = types.ModuleType("cupy.cuda.nvrtc")
        nvrtc.getVersion = lambda: standin.nvrtc

        compiler = types.ModuleType("cupy.cuda.compiler")
        compiler.CompileException = CompileException
        compiler.compile_using_nvrtc = self.compile_using_nvrtc
        compiler._get_arch = lambda: standin.arch
        compiler._get_arch_for_options_for_nvrtc = lambda arch=None: (f"-arch=sm_{arch or standin.arch}", "cubin")
        compiler._get_bool_env_variable = lambda name, default: default
        if (13, 3) <= self.version_tuple() <= (14, 0):
            compiler._get_extra_include_dir_opts = lambda: ("-I/standin/nvidia/cuda_runtime/include",)

        class Device:
            def __init__(self, device=None):
                self.id = standin.device if device is None else device

            @property
            def compute_capability(self):
                return standin.arch

        cuda = types.ModuleType("cupy.cuda")
        cuda.runtime, cuda.nvrtc, cuda.compiler, cuda.Device = runtime, nvrtc, compiler, Device

        core = types.ModuleType("cupy._core.core")

        def assemble_cupy_compiler_options(options):
            options = _tuple("options", options)
            if not any("-std=" in o for o in options):
                options += ("--std=c++17",)
            return options + ("-I/standin/cupy/_core/include",)

        core.assemble_cupy_compiler_options = assemble_cupy_compiler_options
        _core = types.ModuleType("cupy._core")
        _core.core = core

        cupy = types.ModuleType("cupy")
        cupy.__version__ = self.version
        cupy.cuda, cupy._core, cupy.RawModule = cuda, _core, self.raw_module
        cupy.ndarray = type("ndarray", (), {})  # no array here is CuPy's
        cupy.standin = self
        return {"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.runtime": runtime, "cupy.cuda.nvrtc": nvrtc,
                "cupy.cuda.compiler": compiler, "cupy._core": _core, "cupy._core.core": core}

    def version_tuple(self):
        return tuple(int(p) for p in re.match(r"(\d+)\.(\d+)", self.version).groups())


class RawModule:
    def __init__(self, standin, code, path, options, name_expressions):
        self.standin, self.code, self.path, self.options = standin, code, path, options
        self.name_expressions = None if name_expressions is None else tuple(name_expressions)
        self._mapping = self._functions = None
        if code is not None:
            standin.code_modules.append(self)

    def compile(self, log_stream=None):
        """Compiles (or loads) now, as CuPy's does on first use."""
        if self._functions is not None:
            return
        if self.code is not None:
            binary, self._mapping = self.standin.compile_using_nvrtc(self.code, self.options,
                                                                     name_expressions=self.name_expressions)
        else:
            with open(self.path, "rb") as f:
                binary = f.read()
            if not binary.startswith(BINARY_MAGIC):
                raise RuntimeError(f"CUDA_ERROR_INVALID_IMAGE: {self.path} is no module")
            self.standin.loaded_files.append(self.path)
        self._functions = json.loads(binary[len(BINARY_MAGIC):])["functions"]

    def get_function(self, name):
        self.compile()
        self.standin.get_function_calls += 1
        if self._mapping and name in self._mapping:
            name = self._mapping[name]
        if name not in self._functions:
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
        return RawKernel(self.standin, name)


class RawKernel:
    def __init__(self, standin, name):
        self.standin, self.name = standin, name

    def __call__(self, grid, block, args, *, shared_mem=0):
        self.standin.launches.append((self.name, grid, block, args, shared_mem))


def install(monkeypatch, version="14.2.0", **settings):
    """The stand-in as `cupy` for one test (gpucnn.cuda forgets any CuPy it imported)."""
    from gpucnn import cuda
    standin = StandIn(version, **settings)
    for name in [m for m in sys.modules if m == "cupy" or m.startswith("cupy.")]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in standin.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(cuda, "_cupy", None)
    monkeypatch.setattr(cuda, "_cupy_error", None)
    return standin
