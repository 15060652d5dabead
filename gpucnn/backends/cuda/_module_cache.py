"""Kernel modules for a GPU: compiled by NVRTC through CuPy, once per machine, not per process.

CuPy keeps compiled code in its own disk cache, but before 14.2 it never reads that cache back
for a module built with name_expressions (it cannot recover the lowered names from the cubin:
v13.6.0 cupy/cuda/compiler.py `_compile_with_cache_cuda`; 14.1 reads it only with a driver
that can enumerate a module's functions). Every process, every MPI rank, then recompiles every
module. So on those versions gpucnn compiles through CuPy's own compiler, with the options CuPy
would pass, and keeps the result itself:

    <cache_dir()>/<key>.cubin (or .ptx)   what NVRTC returned, loaded with RawModule(path=...)
    <key>.json                              {"sha256": of that file, "names": {expression: lowered name}}

key is the SHA-256 of the format version, CuPy's version, NVRTC's version, the -arch option,
the full option list, the name expressions and the source text. Each file is written to a
temporary name and renamed into place (os.replace), the binary first; a reader trusts the
pair only when the JSON parses, names every expression asked for, and the binary's SHA-256 is
the one it records, so a torn, truncated or foreign file is rebuilt, never loaded. On CuPy
14.2 and later CuPy's own cache does all this (it stores the lowered names in the cached file,
before the cubin), and gpucnn leaves compiling and caching to it.
"""
import contextlib
import hashlib
import json
import re
from pathlib import Path

from ... import cuda, files

FORMAT = 1  # of the files above: changing their layout changes every key
CUPY_CACHES_NAME_EXPRESSIONS = (14, 2)


class CompileError(cuda.DeviceSetupError):
    """NVRTC refused a kernel module; the message gives the file, the arch, NVRTC's first
    error line and where its whole log is."""


def cache_dir():
    """$GPUCNN_CUDA_CACHE, else gpucnn/cuda in the user's cache directory (the emulator's
    builds live beside it, in gpucnn/emulator)."""
    try:
        return files.cache_dir("cuda", "GPUCNN_CUDA_CACHE")
    except OSError as e:
        raise cuda.DeviceSetupError(f"cannot create the CUDA kernel cache ({e}); "
                                    f"set GPUCNN_CUDA_CACHE to a writable directory") from None


def _version(text):
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def load(filename, source, options, name_expressions):
    """(cupy.RawModule, {name expression: the name its get_function takes}) for the module
    compiled from source, the .cu file called filename."""
    import cupy
    if _version(cupy.__version__) >= CUPY_CACHES_NAME_EXPRESSIONS:
        module = cupy.RawModule(code=source, options=tuple(options), name_expressions=name_expressions)
        with _compile_errors(filename):
            module.compile()  # here, not at some later launch: its errors are reported as ours
        return module, {name: name for name in name_expressions}
    binary, names = _cached_binary(filename, source, options, name_expressions)
    return cupy.RawModule(path=str(binary)), names


def _cached_binary(filename, source, options, name_expressions):
    """(path of the compiled module, its lowered names) from the cache, compiling on a miss."""
    from cupy._core import core
    from cupy.cuda import compiler, nvrtc
    import cupy
    # What cupy._core.core.compile_with_cache and compiler._compile_with_cache_cuda add to a
    # RawModule's options, in their order, in CuPy 13.0 to 14.1; compile_using_nvrtc adds the
    # -arch option and --device-as-default-execution-space itself.
    full = core.assemble_cupy_compiler_options(tuple(options)) + ("-ftz=true",)
    if compiler._get_bool_env_variable("CUPY_CUDA_COMPILE_WITH_DEBUG", False):
        full += ("--device-debug", "--generate-line-info")
    if hasattr(compiler, "_get_extra_include_dir_opts"):  # 13.3 to 14.0: the runtime wheel's headers
        full += compiler._get_extra_include_dir_opts()
    arch = compiler._get_arch()
    arch_option, kind = compiler._get_arch_for_options_for_nvrtc(arch)
    key = hashlib.sha256()
    for part in (str(FORMAT), cupy.__version__, repr(nvrtc.getVersion()), arch_option, *full, "",
                 *name_expressions, "", source):
        key.update(part.encode())
        key.update(b"\0")
    folder = cache_dir()
    binary, index = folder / f"{key.hexdigest()}.{kind}", folder / f"{key.hexdigest()}.json"
    names = _read(binary, index, name_expressions)
    if names is None:
        with _compile_errors(filename, arch):
            code, mapping = compiler.compile_using_nvrtc(source, full, arch, name_expressions=name_expressions)
        names = {name: mapping[name] for name in name_expressions}
        _write(binary, code)
        _write(index, json.dumps({"sha256": hashlib.sha256(code).hexdigest(), "names": names}).encode())
    return binary, names


def _read(binary, index, name_expressions):
    """The lowered names that index records for binary, or None unless both are whole and match."""
    try:
        record = json.loads(index.read_bytes())
        code = binary.read_bytes()
        names = {name: record["names"][name] for name in name_expressions}
        whole = record["sha256"] == hashlib.sha256(code).hexdigest()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names if whole else None


def _write(path, data):
    """path holding data, never a partial file, even with processes writing it at once."""
    try:
        files.write_atomic(path, data)
    except OSError as e:
        raise cuda.DeviceSetupError(f"cannot write the CUDA kernel cache file {path} ({e}); "
                                    f"set GPUCNN_CUDA_CACHE to a writable directory") from None


@contextlib.contextmanager
def _compile_errors(filename, arch=None):
    """Turns CuPy's CompileException into a CompileError whose one line names the module, the
    arch and NVRTC's first error; the whole log goes to a file in the cache that it names."""
    from cupy.cuda.compiler import CompileException
    try:
        yield
    except CompileException as e:
        import cupy
        arch = arch or cupy.cuda.Device().compute_capability
        log = str(e)
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        first = next((line for line in lines if "error" in line), lines[0] if lines else "NVRTC gave no log")
        path = cache_dir() / f"{Path(filename).stem}-sm_{arch}.log"
        _write(path, f"{log}\noptions: {' '.join(getattr(e, 'options', ()))}\n".encode())
        raise CompileError(f"NVRTC could not compile {filename} for sm_{arch}: {first} (whole log: {path})") from None
