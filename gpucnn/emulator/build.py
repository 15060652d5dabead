"""From CUDA source text to a CPU shared library: find the kernels, write a C++ wrapper that
exports a launcher and a parameter description for each, compile it with g++, cache the result.

The cache key covers everything that shapes the library (source, options, kernel names, our
headers, compiler version and flags), and each library lands in the cache with an atomic
rename, so parallel test workers never load a half-written file.
"""
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADERS = ("cuda_host.h", "fiber.h", "block.h", "launch.h")
COMPILER = "g++"
RELEASE_FLAGS = ("-std=c++20", "-O2", "-fno-math-errno")
# GPUCNN_EMULATOR_DEBUG=1: debuggable code, and UBSan reports out-of-bounds indexing of
# fixed-size arrays (shared-memory tiles), signed overflow and misaligned access as they happen.
DEBUG_FLAGS = ("-std=c++20", "-O0", "-g", "-fsanitize=undefined")
# Launches are serialised by a lock and a block's threads are fibers of one OS thread, so a
# function-local static never needs a thread-safe guard; with one, a fiber could wait on a
# futex that only another fiber of the same OS thread would release.
COMMON_FLAGS = ("-shared", "-fPIC", "-fvisibility=hidden", "-pthread", "-fno-threadsafe-statics")

_LITERAL_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?\*/', re.S)
_DIRECTIVE = re.compile(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", re.M)
_KERNEL = re.compile(
    r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\("
)
# `__shared__` already means `static` here, and `static static` is not C++.
_STATIC_SHARED = re.compile(r"\bstatic\s+__shared__\b|\b__shared__\s+static\b")
_STATIC_SHARED_VARIABLE = re.compile(
    r"\b__shared__\s+(?:__align__\s*\([^)]*\)\s*)?[A-Za-z_][\w:<>, ]*?\s+(?P<name>[A-Za-z_]\w*)\s*(?:\[[^\];]+\]\s*)*;"
)
_DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\([^)]*\)\s*)?"
    r"(?P<type>[A-Za-z_][\w:<>, ]*?)\s+(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;"
)


def _blank(match):
    """Spaces for a comment or directive, keeping its newlines so line numbers stay put."""
    text = match.group(0)
    if text.startswith(("\"", "'")):
        return text
    return re.sub(r"[^\n]", " ", text)


def code_only(source):
    """The source with comments and preprocessor lines blanked out, for finding kernels."""
    return _DIRECTIVE.sub(_blank, _LITERAL_OR_COMMENT.sub(_blank, source))


def _extern_c_blocks(code):
    """(start, end) of each `extern "C" { ... }` block."""
    blocks = []
    for match in re.finditer(r'extern\s+"C"\s*\{', code):
        depth = 0
        for end in range(match.end() - 1, len(code)):
            depth += {"{": 1, "}": -1}.get(code[end], 0)
            if depth == 0:
                break
        blocks.append((match.start(), end))
    return blocks


def extern_c_kernels(source):
    """Names of the __global__ functions declared extern "C": the ones that get_function finds
    by plain name, as in CuPy (any other kernel needs a name expression)."""
    code = code_only(source)
    blocks = _extern_c_blocks(code)
    names = []
    for match in _KERNEL.finditer(code):
        declaration = code[max(code.rfind(c, 0, match.start()) for c in ";{}") + 1:match.start()]
        in_block = any(start < match.start() < end for start, end in blocks)
        if (in_block or re.search(r'extern\s+"C"', declaration)) and "template" not in declaration:
            names.append(match.group(1))
    return list(dict.fromkeys(names))


def host_source(source):
    """The kernel source as host C++: `extern __shared__ T name[];` becomes a pointer to the
    launch's dynamic shared-memory buffer (every such array starts there, as on a GPU),
    `static __shared__` loses the `static` that `__shared__` stands for already, and each
    `__shared__ T name[N]...;` is followed, on the same line, by a registration that refills
    the variable with all-ones bytes at the start of every block."""
    def to_pointer(match):
        t, name = match.group("type").strip(), match.group("name")
        newlines = "\n" * match.group(0).count("\n")
        return f"{t}* const {name} = static_cast<{t}*>(gpucnn_emu::dynamic_shared());{newlines}"

    def poisoned(match):
        name = match.group("name")
        return f"{match.group(0)} static gpucnn_emu::PoisonEveryBlock gpucnn_poison_{name}(&{name}, sizeof {name});"

    rewritten = _DYNAMIC_SHARED.sub(to_pointer, _STATIC_SHARED.sub("__shared__", source))
    rewritten = _STATIC_SHARED_VARIABLE.sub(poisoned, rewritten)
    left = re.search(r"extern\s+__shared__[^;]*;", code_only(rewritten))
    if left:
        line = rewritten.count("\n", 0, left.start()) + 1
        raise RuntimeError(
            f"CUDA emulator: cannot read the dynamic shared-memory declaration on line {line}: "
            f"{left.group(0)!r}; write it as `extern __shared__ T name[];`"
        )
    return rewritten


def wrapper_source(entries):
    """C++ exporting, for each kernel expression, its launcher and its parameter description."""
    lines = ['#include "cuda_host.h"', '#include "launch.h"', '#include "kernels.cu"', ""]
    for i, expression in enumerate(entries):
        lines += [
            f"// {expression}",
            f"GPUCNN_EMU_EXPORT const char* gpucnn_emu_signature_{i}() "
            f"{{ return gpucnn_emu::signature(&{expression}); }}",
            f"GPUCNN_EMU_EXPORT int gpucnn_emu_launch_{i}(const unsigned* gpucnn_grid, "
            f"const unsigned* gpucnn_block, const std::uint64_t* gpucnn_slots, size_t gpucnn_shared) "
            f"{{ return gpucnn_emu::launch(&{expression}, gpucnn_grid, gpucnn_block, gpucnn_slots, gpucnn_shared); }}",
        ]
    return "\n".join(lines) + "\n"


def compiler_options(options):
    """The nvcc options that mean the same to g++: -D, -U and -I (its directory made absolute,
    since g++ runs in a build directory), also when given as two items ("-I", "dir"). The
    others (-arch, -std, --use_fast_math, ...) concern GPU code generation."""
    options = list(options)
    kept = []
    for i, option in enumerate(options):
        if option in ("-D", "-U", "-I") and i + 1 < len(options):
            option += options[i + 1]
        if option.startswith("-I"):
            kept.append("-I" + os.path.abspath(option[2:]))
        elif option.startswith(("-D", "-U")):
            kept.append(option)
    return kept


def debug_enabled():
    return os.environ.get("GPUCNN_EMULATOR_DEBUG", "") not in ("", "0")


def cache_dir():
    """$GPUCNN_EMULATOR_CACHE, else gpucnn/emulator in the user's cache directory."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpucnn" / "emulator"
    path = Path(os.environ.get("GPUCNN_EMULATOR_CACHE") or default)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeError(
            f"CUDA emulator: cannot create its build cache {path} ({e}); "
            f"set GPUCNN_EMULATOR_CACHE to a writable directory"
        ) from e
    return path


@functools.cache
def compiler_version():
    try:
        return subprocess.run([COMPILER, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"CUDA emulator: it compiles kernels with {COMPILER}, which could not run: {e}") from e


def build(source, options, entries):
    """Path of the shared library for `source`, compiling it unless the cache has it."""
    user_flags = compiler_options(options)
    flags = [*(DEBUG_FLAGS if debug_enabled() else RELEASE_FLAGS), *COMMON_FLAGS, *user_flags]
    wrapper = wrapper_source(entries)
    kernels = host_source(source)
    parts = [kernels, wrapper, *((HERE / h).read_text() for h in HEADERS), compiler_version(), *flags]
    if any(f.startswith("-I") for f in user_flags):
        # Headers found through -I are compiled too: key on the preprocessed text as well.
        preprocess = [COMPILER, "-E", "-x", "c++", *user_flags, "-"]
        parts.append(subprocess.run(preprocess, input=kernels, capture_output=True, text=True).stdout)
    key = hashlib.sha256()
    for part in parts:
        key.update(part.encode())
        key.update(b"\0")
    cache = cache_dir()
    library = cache / f"{key.hexdigest()[:32]}.so"
    if library.exists():
        return library

    workdir = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    (workdir / "kernels.cu").write_text(kernels)
    (workdir / "wrapper.cpp").write_text(wrapper)
    command = [COMPILER, *flags, "-I", str(HERE), "wrapper.cpp", "-o", "module.so"]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if result.returncode != 0:
        raise RuntimeError(
            f"CUDA emulator: g++ could not compile the kernel source; it is kept as "
            f"{workdir / 'kernels.cu'} (command: {' '.join(command)}):\n{result.stderr}"
        )
    os.replace(workdir / "module.so", library)
    if not debug_enabled():  # a debug build keeps its sources, for the debugger to show
        shutil.rmtree(workdir, ignore_errors=True)
    return library
