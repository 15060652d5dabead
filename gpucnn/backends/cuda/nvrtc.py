"""The kernel modules compiled as CuPy's `RawModule` compiles them on a user's machine, with the
NVRTC of the pip wheels, on any machine: no GPU, driver or CUDA toolkit needed.

A user's CuPy hands NVRTC the module's text and name expressions, the backend's
`KERNEL_OPTIONS`, and adds its own: `-ftz=true`, `-arch=sm_XX` for the device,
`--device-as-default-execution-space`, and `-I` for the CUDA runtime's headers, which on a
pip-only install are the `nvidia-cuda-runtime` wheel's include folder (CuPy 14.2
`cupy/_core/core.pyx` `assemble_cupy_compiler_options` and `cupy/cuda/compiler.py`
`_compile_with_cache_cuda`; CuPy 13.6 the same, finding that wheel in `cupy/_environment.py`).
CuPy also puts its own include folder and its bundled CCCL on the path; they hold only
`cupy/...`, `cub/...`, `thrust/...` and `cuda/...` headers, which the kernels never include, so
leaving them out changes nothing. `--ptxas-options=-v` is added here to read each entry's
registers and spills from the program log; it changes no code.

    from gpucnn.backends.cuda import nvrtc
    build = nvrtc.compile_module("relu.cu", 80, 12)   # NVRTC 12, sm_80
    build.error, build.lowered, build.entries()

Builds are cached on disk ($GPUCNN_NVRTC_CACHE, else gpucnn/nvrtc in the user's cache
directory), keyed by the file name, the text, the name expressions, the options (the arch among
them) and the NVRTC wheel's version.
"""
import ctypes
import functools
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ... import files
from . import _kernels

# Per CUDA major: (distribution, file in it) of libnvrtc and of the runtime's include folder.
# CUDA 13's wheels share one nvidia/cu13 folder.
WHEELS = {
    12: (("nvidia-cuda-nvrtc-cu12", "nvidia/cuda_nvrtc/lib/libnvrtc.so.12"),
         ("nvidia-cuda-runtime-cu12", "nvidia/cuda_runtime/include")),
    13: (("nvidia-cuda-nvrtc", "nvidia/cu13/lib/libnvrtc.so.13"),
         ("nvidia-cuda-runtime", "nvidia/cu13/include")),
}
EXTRA = "gpucnn[nvrtc]"

# Archs that every CI run compiles for: the oldest that CUDA 13 supports, then the A100, the
# H100/H200 and consumer Blackwell.
CI_ARCHS = (75, 80, 90, 120)

# Every arch a CuPy wheel of each CUDA major runs on: those its build compiles for
# (install/cupy_builder/_compiler.py in v13.6.0 and v14.2.0, x86-64 and aarch64's Jetsons),
# and the Blackwell family members that its sm_100 and sm_120 family code runs on (103, 121).
# On each, RawModule compiles the modules with -arch=sm_XX.
CUPY_ARCHS = {12: (50, 52, 60, 61, 70, 72, 75, 80, 86, 87, 89, 90, 100, 103, 120, 121),
              13: (75, 80, 86, 87, 89, 90, 100, 103, 110, 120, 121)}

_PTX_THREADS = re.compile(r"\.entry (\w+)\([^{]*?\.maxntid (\d+)", re.S)
_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_\d+\w*'")
_PTXAS_FRAME = re.compile(r"Function properties for (\w+)\s*ptxas\s+\.\s+(\d+) bytes stack frame, "
                          r"(\d+) bytes spill stores, (\d+) bytes spill loads")


class NvrtcUnavailable(RuntimeError):
    """The wheels of a CUDA major's NVRTC or runtime headers are not installed."""


def _wheel_file(major, which):
    distribution, relative = WHEELS[major][which]
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise NvrtcUnavailable(f"gpucnn.nvrtc: {distribution} is not installed; pip install '{EXTRA}'") from None
    path = Path(dist.locate_file(relative))
    if not path.exists():
        raise NvrtcUnavailable(f"gpucnn.nvrtc: {distribution} {dist.version} has no {relative}; "
                               f"reinstall it (pip install --force-reinstall '{EXTRA}')")
    return dist.version, path


class _Library:
    """libnvrtc.so.N of a wheel, loaded by path. NVRTC loads libnvrtc-builtins at its first
    compile by file name; CUDA 12's library finds it beside itself (RUNPATH $ORIGIN), CUDA 13's
    does not, so the builtins are loaded first, globally, from the same folder."""

    def __init__(self, major):
        self.wheel_version, path = _wheel_file(major, 0)
        for builtins in sorted(path.parent.glob("libnvrtc-builtins.so.*")):
            ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
        self.lib = ctypes.CDLL(str(path))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major_, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major_), ctypes.byref(minor)), "nvrtcVersion")
        self.version = f"{major_.value}.{minor.value}"
        count = ctypes.c_int()
        self._check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * count.value)()
        self._check(self.lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        self.archs = tuple(archs)

    def _check(self, result, call):
        if result != 0:
            raise RuntimeError(f"gpucnn.nvrtc: {call} failed: {self.lib.nvrtcGetErrorString(result).decode()}")

    def _bytes(self, program, size_call, get_call):
        size = ctypes.c_size_t()
        self._check(getattr(self.lib, size_call)(program, ctypes.byref(size)), size_call)
        buffer = ctypes.create_string_buffer(size.value)
        self._check(getattr(self.lib, get_call)(program, buffer), get_call)
        return buffer.raw

    def compile(self, source, filename, options, name_expressions):
        """(log, {expression: lowered name}, {entry: threads}, CUBIN size), the last three empty if
        it failed. Threads: each entry's .maxntid in the PTX, its __launch_bounds__."""
        program = ctypes.c_void_p()
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), filename.encode(), 0,
                                                None, None), "nvrtcCreateProgram")
        try:
            for expression in name_expressions:
                self._check(self.lib.nvrtcAddNameExpression(program, expression.encode()), "nvrtcAddNameExpression")
            encoded = [o.encode() for o in options]
            result = self.lib.nvrtcCompileProgram(program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded))
            log = self._bytes(program, "nvrtcGetProgramLogSize", "nvrtcGetProgramLog").rstrip(b"\0").decode()
            if result != 0:
                return log, {}, {}, 0
            lowered = {}
            for expression in name_expressions:
                name = ctypes.c_char_p()
                self._check(self.lib.nvrtcGetLoweredName(program, expression.encode(), ctypes.byref(name)),
                            f"nvrtcGetLoweredName of {expression}")
                lowered[expression] = name.value.decode()
            ptx = self._bytes(program, "nvrtcGetPTXSize", "nvrtcGetPTX").rstrip(b"\0").decode()
            threads = {name: int(n) for name, n in _PTX_THREADS.findall(ptx)}
            cubin = self._bytes(program, "nvrtcGetCUBINSize", "nvrtcGetCUBIN")
            return log, lowered, threads, len(cubin)
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(program))


@functools.cache
def _library(major):
    return _Library(major)


def version(major):
    """NVRTC's own version, "12.9", of the CUDA major's wheel."""
    return _library(major).version


def wheel_version(major):
    """The NVRTC wheel's version, "12.9.86": what the builds are a function of."""
    return _library(major).wheel_version


def supported_archs(major):
    """Every arch the CUDA major's NVRTC compiles for (nvrtcGetSupportedArchs)."""
    return _library(major).archs


def include_folder(major):
    """The runtime wheel's headers: CuPy's NVRTC include path on a pip-only install. CuPy 13
    uses them only when their major.minor is NVRTC's; so does this."""
    runtime_version, path = _wheel_file(major, 1)
    if runtime_version.split(".")[:2] != version(major).split("."):
        raise NvrtcUnavailable(f"gpucnn.nvrtc: {WHEELS[major][1][0]} {runtime_version} does not match NVRTC "
                               f"{version(major)}; pip install '{EXTRA}'")
    return path


def cupy_options(major, arch):
    """The options CuPy's RawModule passes NVRTC for the backend's modules, in its order."""
    return (*_kernels.KERNEL_OPTIONS, f"-I{include_folder(major)}", "-ftz=true", f"-arch=sm_{arch}",
            "--device-as-default-execution-space")


@dataclass(frozen=True)
class Entry:
    """One kernel entry's resources, from ptxas's -v report."""
    registers: int
    shared: int
    stack: int
    spill_stores: int
    spill_loads: int
    barriers: int
    threads: int  # .maxntid: the kernel's __launch_bounds__


def _number(pattern, text, default=None):
    found = re.search(pattern, text)
    if found is None and default is None:
        raise ValueError(f"gpucnn.nvrtc: no {pattern!r} in ptxas's report:\n{text}")
    return int(found.group(1)) if found else default


def frames(log):
    """{function: (stack frame, spill stores, spill loads) in bytes} for every function in a
    program log of --ptxas-options=-v: the entries, and device functions not inlined."""
    return {name: tuple(map(int, numbers)) for name, *numbers in _PTXAS_FRAME.findall(log)}


def entries(log, threads):
    """{entry (lowered) name: Entry} from a program log of --ptxas-options=-v and the entries'
    threads per block."""
    frame = frames(log)
    chunks = _PTXAS_ENTRY.split(log)
    return {name: Entry(registers=_number(r"Used (\d+) registers", report),
                        shared=_number(r"(\d+) bytes smem", report, 0),
                        stack=frame[name][0], spill_stores=frame[name][1], spill_loads=frame[name][2],
                        barriers=_number(r"used (\d+) barriers", report, 0),
                        threads=threads[name])
            for name, report in zip(chunks[1::2], chunks[2::2])}


@dataclass(frozen=True)
class Build:
    """One kernel module compiled by one NVRTC for one arch."""
    filename: str
    arch: int
    nvrtc: str      # NVRTC's version, "12.9"
    log: str        # the program log: ptxas's report, or the errors
    lowered: dict   # name expression -> lowered (mangled) name: every one, if it compiled
    threads: dict   # lowered name -> threads per block (.maxntid, the __launch_bounds__)
    cubin_size: int
    name_expressions: tuple

    @property
    def what(self):
        return f"{self.filename} (sm_{self.arch}, NVRTC {self.nvrtc})"

    @property
    def error(self):
        """None if NVRTC produced a CUBIN, else the log's first error line."""
        if self.cubin_size:
            return None
        lines = self.log.splitlines()
        return next((line for line in lines if "error" in line), lines[0] if lines else "no log")

    def entries(self):
        return entries(self.log, self.threads)

    def problems(self):
        """Everything wrong with the build, one line each: empty when it may ship. A name
        expression that names no instance is a compile error."""
        if self.error:
            return [f"{self.what}: {self.error}"]
        expressions = {name: expression for expression, name in self.lowered.items()}
        return [f"{self.what}: {expressions.get(name, name)} spills ({stores} bytes spill stores, "
                f"{loads} bytes spill loads)"
                for name, (_, stores, loads) in frames(self.log).items() if stores or loads]


def cache_dir():
    """$GPUCNN_NVRTC_CACHE, else gpucnn/nvrtc in the user's cache directory."""
    return files.cache_dir("nvrtc", "GPUCNN_NVRTC_CACHE")


def compile_source(source, filename, name_expressions, arch, major):
    """A Build of source, from the disk cache when it has it."""
    options = (*cupy_options(major, arch), "--ptxas-options=-v")
    key = hashlib.sha256("\0".join((filename, source, *name_expressions, *options, wheel_version(major))).encode())
    try:  # an unreadable or unwritable cache costs a rebuild, nothing else
        cached = cache_dir() / f"{key.hexdigest()[:32]}.json"
        return Build(**{**json.loads(cached.read_text()), "name_expressions": tuple(name_expressions)})
    except (OSError, ValueError, TypeError):
        pass
    log, lowered, threads, cubin_size = _library(major).compile(source, filename, options, name_expressions)
    build = Build(filename, arch, version(major), log, lowered, threads, cubin_size, tuple(name_expressions))
    record = {k: v for k, v in build.__dict__.items() if k != "name_expressions"}
    try:
        files.write_atomic(cache_dir() / f"{key.hexdigest()[:32]}.json", json.dumps(record).encode())
    except OSError:
        pass
    return build


def compile_module(filename, arch, major):
    """A Build of the backend's module `filename` with every name expression it provides."""
    return compile_source(_kernels.kernel_source(filename), filename, _kernels.name_expressions(filename),
                          arch, major)


def compile_modules(archs, majors, filenames=None):
    """Builds of every module (default: every one the package's families declare) for every
    arch and NVRTC major, in major-then-arch-then-file order. They run in threads, one per CPU
    of this process: ctypes releases the GIL in each call, and NVRTC's calls on separate
    programs run concurrently (nvrtc.h names only nvrtcGetTypeName as unsafe in threads)."""
    filenames = filenames or _kernels.kernel_files()
    for major in majors:
        _library(major)  # loaded here, once, not by racing threads
    jobs = [(f, arch, major) for major in majors for arch in archs for f in filenames]
    # The modules with the most instances take the longest: they start first.
    order = sorted(jobs, key=lambda job: -len(_kernels.name_expressions(job[0])))
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        done = dict(zip(order, pool.map(lambda job: compile_module(*job), order)))
    return [done[job] for job in jobs]
