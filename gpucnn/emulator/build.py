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

from .. import files

HERE = Path(__file__).resolve().parent
HEADERS = ("cuda_host.h", "fiber.h", "block.h", "sanitizer.h", "launch.h", "mma.h", "tensor_core.h")
COMPILER = "g++"
# The architectures whose TF32 tensor-core arithmetic tensor_core.h models (GPUCNN_EMULATOR_ARCH).
ARCHES = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
DEFAULT_ARCH = "sm_90"
# Floating point as on a GPU: no multiply-add contracted into an FMA behind the kernel's back
# (NVRTC runs with --fmad=false; the kernels write their FMAs as fmaf/fma, a true fused
# operation here too), IEEE division and square root, no fast-math.
FLOAT_FLAGS = ("-ffp-contract=off", "-fno-math-errno")
RELEASE_FLAGS = ("-O2",)
# GPUCNN_EMULATOR_DEBUG=1: debuggable code, and UBSan reports out-of-bounds indexing of
# fixed-size arrays (shared-memory tiles), signed overflow and misaligned access as they happen.
DEBUG_FLAGS = ("-O0", "-g", "-fsanitize=undefined")
# The checking mode (sanitizer.h): GCC's ThreadSanitizer instrumentation calls our own
# __tsan_* checks before every load and store (libtsan is not linked). The compiler must not
# fuse, split or vectorize accesses, so that each one it reports is one the source makes:
# a float4 copy stays one 16-byte access, two int stores stay two.
SANITIZE_FLAGS = (
    "-DGPUCNN_EMU_SANITIZE", "-g", "-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0",
    "-fno-tree-sra", "-fno-tree-vectorize", "-fno-tree-slp-vectorize", "-fno-store-merging",
    "-fno-tree-loop-distribute-patterns",
)
# Launches are serialised by a lock and a block's threads are fibers of one OS thread, so a
# function-local static never needs a thread-safe guard; with one, a fiber could wait on a
# futex that only another fiber of the same OS thread would release.
COMMON_FLAGS = ("-fPIC", "-fvisibility=hidden", "-pthread", "-fno-threadsafe-statics")
# NVRTC under CuPy 14 compiles C++17 unless the options name a dialect.
DEFAULT_DIALECT = "c++17"

_LITERAL_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?\*/', re.S)
_DIRECTIVE = re.compile(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", re.M)
_GLOBAL = re.compile(r"\b__global__\b")
_BOUNDS = re.compile(r"\s*__launch_bounds__\s*\(")
_CALLED = re.compile(r"([A-Za-z_]\w*)\s*\(")
_BODY = re.compile(r"\s*\{")
# `__shared__` already means `static` here, and `static static` is not C++.
_STATIC_SHARED = re.compile(r"\bstatic\s+__shared__\b|\b__shared__\s+static\b")
_ALIGN = r"(?:__align__\s*\([^)]*\)\s*)?"
_STATIC_SHARED_VARIABLE = re.compile(
    _ALIGN + r"\b__shared__\s+" + _ALIGN +
    r"(?P<type>[A-Za-z_][\w:<>, ]*?)\s+(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\];]+\]\s*)*);"
)
_DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+" + _ALIGN +
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


def _closing(code, opening):
    """Index of the parenthesis that closes the one at `opening`."""
    depth = 0
    for i in range(opening, len(code)):
        depth += {"(": 1, ")": -1}.get(code[i], 0)
        if depth == 0:
            return i
    raise RuntimeError(f"CUDA emulator: unbalanced parentheses after {code[opening:opening + 60]!r}")


class Kernel:
    """A __global__ function as the source declares it."""

    def __init__(self, code, start):
        self.start = start
        self.bounds = None  # the expression of __launch_bounds__(max_threads, ...), if any
        position = start
        while True:
            bounds, called = _BOUNDS.search(code, position), _CALLED.search(code, position)
            if bounds and bounds.start() <= called.start():
                close = _closing(code, bounds.end() - 1)
                self.bounds = _top_level_split(code[bounds.end():close])[0]
                position = close + 1
                continue
            break
        self.name = called.group(1)
        close = _closing(code, called.end() - 1)
        self.parameters = [p for p in _top_level_split(code[called.end():close]) if p]
        body = _BODY.match(code, close + 1)
        self.body = body.end() - 1 if body else None  # index of its '{'; None for a declaration

    def parameter_name(self, i):
        names = re.findall(r"[A-Za-z_]\w*", self.parameters[i]) if i < len(self.parameters) else []
        return names[-1] if names else f"#{i}"


def _top_level_split(text):
    """text split at the commas outside parentheses, brackets and angle brackets, stripped."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += {"(": 1, "[": 1, "<": 1, ")": -1, "]": -1, ">": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return parts + [text[start:].strip()]


def kernels(source):
    """Every __global__ function of the source, in order."""
    code = code_only(source)
    return [Kernel(code, match.end()) for match in _GLOBAL.finditer(code)]


def extern_c_kernels(source):
    """Names of the __global__ functions declared extern "C": the ones that get_function finds
    by plain name, as in CuPy (any other kernel needs a name expression)."""
    code = code_only(source)
    blocks = _extern_c_blocks(code)
    names = []
    for kernel in kernels(source):
        declaration = code[max(code.rfind(c, 0, kernel.start) for c in ";{}") + 1:kernel.start]
        in_block = any(start < kernel.start < end for start, end in blocks)
        if (in_block or re.search(r'extern\s+"C"', declaration)) and "template" not in declaration:
            names.append(kernel.name)
    return list(dict.fromkeys(names))


def _bounded(source):
    """The source with a check at the top of each kernel declared with __launch_bounds__: a
    block bigger than its bound ends the launch, as a GPU refuses it. On the same line, so
    that line numbers stay put."""
    for kernel in reversed(kernels(source)):
        if kernel.bounds and kernel.body is not None:
            check = f" gpucnn_emu::check_launch_bounds({kernel.bounds});"
            source = source[:kernel.body + 1] + check + source[kernel.body + 1:]
    return source


def host_source(source, sanitize=False):
    """The kernel source as host C++: `extern __shared__ T name[];` becomes a pointer to the
    launch's dynamic shared-memory buffer (every such array starts there, as on a GPU),
    `static __shared__` loses the `static` that `__shared__` stands for already, and each
    `__shared__ T name[N]...;` is followed, on the same line, by a registration that refills
    the variable with all-ones bytes at the start of every block. In the checking mode each
    such variable also gets redzones on both sides (sanitizer.h's Redzoned), so that an index
    past its end is caught, not read from its neighbour. Kernels with __launch_bounds__ check
    their block size."""
    def to_pointer(match):
        t, name = match.group("type").strip(), match.group("name")
        newlines = "\n" * match.group(0).count("\n")
        return f"{t}* const {name} = static_cast<{t}*>(gpucnn_emu::dynamic_shared());{newlines}"

    def registered(match):
        name, newlines = match.group("name"), "\n" * match.group(0).count("\n")
        if sanitize:
            whole = f"gpucnn_shared_{name}"
            declaration = (f"__shared__ gpucnn_emu::Redzoned<{match.group('type')}{match.group('dims')}> {whole}; "
                           f"auto& {name} = {whole}.value;")
        else:
            whole, declaration = name, match.group(0)
        return (f"{declaration} static gpucnn_emu::SharedVariable gpucnn_poison_{name}(&{name}, sizeof {name}, "
                f"&{whole}, sizeof {whole}, \"shared array {name}\");" + (newlines if sanitize else ""))

    rewritten = _DYNAMIC_SHARED.sub(to_pointer, _STATIC_SHARED.sub("__shared__", _bounded(source)))
    rewritten = _STATIC_SHARED_VARIABLE.sub(registered, rewritten)
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
    lines = ['#include "cuda_host.h"', '#include "launch.h"', '#include "mma.h"', '#include "kernels.cu"', ""]
    for i, expression in enumerate(entries):
        lines += [
            f"// {expression}",
            f"GPUCNN_EMU_EXPORT const char* gpucnn_emu_signature_{i}() "
            f"{{ return gpucnn_emu::signature(&{expression}); }}",
            f"GPUCNN_EMU_EXPORT int gpucnn_emu_launch_{i}(const unsigned* gpucnn_grid, "
            f"const unsigned* gpucnn_block, const std::uint64_t* gpucnn_slots, size_t gpucnn_shared, "
            f"unsigned gpucnn_flags) {{ return gpucnn_emu::launch(&{expression}, gpucnn_grid, gpucnn_block, "
            f"gpucnn_slots, gpucnn_shared, gpucnn_flags); }}",
        ]
    return "\n".join(lines) + "\n"


def dialect(options):
    """The C++ dialect the options ask NVRTC for (-std=c++17, --std=c++20, "-std" "c++14"), as
    g++ spells it; C++17 if none. The emulator's headers need C++17."""
    options = list(options)
    chosen = DEFAULT_DIALECT
    for i, option in enumerate(options):
        if option in ("-std", "--std") and i + 1 < len(options):
            chosen = options[i + 1]
        elif option.startswith(("-std=", "--std=")):
            chosen = option.split("=", 1)[1]
    match = re.fullmatch(r"c\+\+(\d\d)", chosen)
    if not match or int(match.group(1)) in (98, 3, 11, 14):
        raise RuntimeError(
            f"CUDA emulator: it compiles kernels as C++17 or later, as NVRTC does by default, but the options ask "
            f"for -std={chosen}"
        )
    return f"-std={chosen}"


def compiler_options(options):
    """The nvcc options that mean the same to g++: -D, -U and -I (its directory made absolute,
    since g++ runs in a build directory), also when given as two items ("-I", "dir"), and the
    C++ dialect. The others (-arch, --use_fast_math, ...) concern GPU code generation."""
    options = list(options)
    kept = [dialect(options)]
    for i, option in enumerate(options):
        if option in ("-D", "-U", "-I") and i + 1 < len(options):
            option += options[i + 1]
        if option.startswith("-I"):
            kept.append("-I" + os.path.abspath(option[2:]))
        elif option.startswith(("-D", "-U")):
            kept.append(option)
    return kept


def target_arch():
    """The GPU whose TF32 tensor-core arithmetic the emulator reproduces bit for bit
    (tensor_core.h): $GPUCNN_EMULATOR_ARCH, sm_90 when unset."""
    arch = os.environ.get("GPUCNN_EMULATOR_ARCH", "") or DEFAULT_ARCH
    if arch not in ARCHES:
        raise ValueError(
            f"CUDA emulator: GPUCNN_EMULATOR_ARCH={arch!r} is not an architecture whose tensor cores it models; "
            f"accepted: {', '.join(ARCHES)}"
        )
    return arch


def sanitize_enabled():
    return os.environ.get("GPUCNN_EMULATOR_SANITIZE", "") not in ("", "0")


def debug_enabled():
    return os.environ.get("GPUCNN_EMULATOR_DEBUG", "") not in ("", "0")


def cache_dir():
    """$GPUCNN_EMULATOR_CACHE, else gpucnn/emulator in the user's cache directory."""
    try:
        return files.cache_dir("emulator", "GPUCNN_EMULATOR_CACHE")
    except OSError as e:
        raise RuntimeError(
            f"CUDA emulator: cannot create its build cache ({e}); set GPUCNN_EMULATOR_CACHE to a writable directory"
        ) from e


@functools.cache
def compiler_version():
    try:
        return subprocess.run([COMPILER, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"CUDA emulator: it compiles kernels with {COMPILER}, which could not run: {e}") from e


def _cpu_has_fma():
    """Whether this CPU fuses a multiply-add in one instruction (else fmaf is a library call:
    as exact, slower)."""
    try:
        return " fma " in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def flags(sanitize):
    """g++'s flags for a build in the current mode."""
    mode = DEBUG_FLAGS if debug_enabled() else RELEASE_FLAGS

    return [*mode, *FLOAT_FLAGS, *(("-mfma",) if _cpu_has_fma() else ()), *(SANITIZE_FLAGS if sanitize else ()),
            *COMMON_FLAGS, f"-DGPUCNN_EMU_SM={target_arch().removeprefix('sm_')}"]


def build(source, options, entries, sanitize=False):
    """Path of the shared library for `source`, compiling it unless the cache has it."""
    user_flags = compiler_options(options)
    compile_flags = [*flags(sanitize), *user_flags]
    # The checking mode defines the __tsan_* functions itself: libtsan must not be linked, and
    # every symbol must resolve inside the library (-z defs), or dlopen would fail later.
    link_flags = ["-shared", "-pthread", "-Wl,-z,defs", *(("-fsanitize=undefined",) if debug_enabled() else ())]
    wrapper = wrapper_source(entries)
    kernels = host_source(source, sanitize)
    parts = [kernels, wrapper, *((HERE / h).read_text() for h in HEADERS), compiler_version(), *compile_flags,
             *link_flags]
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
    # -iquote: the wrapper's `#include "cuda_host.h"` finds the emulator's headers, and a kernel's
    # `#include <...>` finds none of them, as NVRTC would not.
    for command in ([COMPILER, *compile_flags, "-iquote", str(HERE), "-c", "wrapper.cpp", "-o", "module.o"],
                    [COMPILER, *link_flags, "module.o", "-o", "module.so"]):
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                env={**os.environ, "LC_ALL": "C"})
        if result.returncode != 0:
            break
    if result.returncode != 0:
        raise RuntimeError(
            f"CUDA emulator: g++ could not compile the kernel source; it is kept as "
            f"{workdir / 'kernels.cu'} (command: {' '.join(command)}):\n{result.stderr}"
        )
    os.replace(workdir / "module.so", library)
    if not debug_enabled():  # a debug build keeps its sources, for the debugger to show
        shutil.rmtree(workdir, ignore_errors=True)
    return library
