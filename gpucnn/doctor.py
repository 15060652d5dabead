"""`python -m gpucnn.doctor` (also `gpucnn-doctor`): what to run first on a GPU.

It prints the versions that decide whether the CUDA path runs (gpucnn, Python, NumPy, CuPy,
the CUDA runtime and driver, NVRTC, NCCL, the GPU and its compute capability), each missing
piece with its fix. Then it runs every kernel family once on small shapes
(`gpucnn.backends.families`) against the NumPy path, compiling each kernel module for this
GPU on the way, and ends with a table: passed, FAILED or skipped per family, with the time
its first call took beyond its second (compiling its modules, or loading them from a cache)
and the second's time. A failure gets its cause in one line and the fix.

Without a GPU it does the same on the CPU emulator (GPUCNN_CUDA_EMULATOR=1) and says so in
its first line; `--sanitize` adds the emulator's checking mode. The exit status is 0 when no
family failed, 1 otherwise.
"""
import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import __version__, cuda, precision
from .backends import cpu, families
from .backends import cuda as cuda_ops

REPORT_FIX = "report it with this output (python -m gpucnn.doctor > doctor.txt) as a gpucnn issue"
DRIVER_FIX = ("upgrade the NVIDIA driver (nvidia-smi shows the newest CUDA it runs), or install gpucnn's extra "
              "for an older CUDA (\".[cuda12]\" instead of \".[cuda13]\")")
INSTALL_FIX = 'install gpucnn\'s CUDA extra in its clone: pip install -e ".[cuda12]" (or ".[cuda13]")'


@dataclass
class Outcome:
    family: str
    status: str           # "passed", "FAILED" or "skipped"
    compile_s: float = 0.0
    run_s: float = 0.0
    cause: str = ""       # one line: which call, what went wrong
    fix: str = ""


def one_line(error):
    """An exception as one line: its type and the first non-empty line of its message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def fix_for(error):
    """What to do about an exception a kernel family raised ("" when its message says it)."""
    if isinstance(error, cuda.DeviceSetupError):
        return ""
    text = str(error).lower()
    if "driver" in text and ("insufficient" in text or "too old" in text or "older" in text or "upgrade" in text):
        return DRIVER_FIX
    if isinstance(error, ImportError) or "nvrtc" in text and ("load" in text or "not found" in text):
        return INSTALL_FIX
    return REPORT_FIX


def _cuda_version(number):
    """12090 as 12.9; 0, the driver version where there is none, as "none"."""
    return cuda._cuda_version(number) if number else "none"


def nccl_version(number):
    """NCCL's version integer: 22703 is 2.27.3 (2.9 and later), 2804 is 2.8.4."""
    major, rest = (number // 10000, number % 10000) if number >= 10000 else (number // 1000, number % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _probe(describe):
    """describe() as a line, or what went wrong with it and the fix."""
    try:
        return describe()
    except Exception as e:  # a missing library, or a driver CuPy cannot use
        fix = fix_for(e)
        return f"unavailable: {one_line(e)}" + (f" (fix: {fix})" if fix else "")


def _nccl(cupy):
    from cupy.cuda import nccl

    from .distributed.nccl import NCCL_HINT
    if not nccl.available:
        return f"not installed; data-parallel training on GPUs needs it (fix: {NCCL_HINT})"
    return nccl_version(nccl.get_version())


def _gpu(cupy):
    props = cupy.cuda.runtime.getDeviceProperties(0)
    arch = cupy.cuda.Device(0).compute_capability
    return f"{props['name'].decode()}, {props['totalGlobalMem'] / 2**30:.1f} GiB, sm_{arch}"


def environment():
    """(label, value) for each version that matters, a missing one with its fix."""
    lines = [("gpucnn", __version__), ("Python", platform.python_version()), ("NumPy", np.__version__)]
    try:
        import cupy
    except Exception as e:  # not installed, or built for another CUDA
        return lines + [("CuPy", f"not usable: {one_line(e)} (fix: {cuda.INSTALL_HINT})")]
    runtime = cupy.cuda.runtime
    return lines + [
        ("CuPy", cupy.__version__),
        ("CUDA", _probe(lambda: f"runtime {_cuda_version(runtime.runtimeGetVersion())}, "
                                f"driver {_cuda_version(runtime.driverGetVersion())} (the newest CUDA it runs)")),
        ("NVRTC", _probe(lambda: ".".join(map(str, cupy.cuda.nvrtc.getVersion())))),
        ("NCCL", _probe(lambda: _nccl(cupy))),
        ("GPU", _probe(lambda: _gpu(cupy))),
    ]


def gpu_arch():
    import cupy
    return int(cupy.cuda.Device().compute_capability)


def _compare(call, got, want):
    """None when got (the device's outputs, in NumPy) is what NumPy's op gave, else why not."""
    want = [np.asarray(w) for w in families.outputs(want)]
    if call.reference is not None:  # computed in float64 from rounded inputs
        want = [w.astype(np.result_type(*call.inputs)) for w in want]
    if len(got) != len(want):
        return f"{call.name}: {len(got)} outputs, where NumPy's op gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        problem = families.mismatch(g, w, call.tolerance)
        if problem:
            return f"{call.name}{f', output {i}' if len(got) > 1 else ''}: {problem}"
    return None


class FamilyError(Exception):
    """A call of the family raised: cause, one line naming the call; fix, what to do."""

    def __init__(self, cause, fix):
        super().__init__(cause)
        self.cause, self.fix = cause, fix


def _run_on_device(calls, ops, to_device):
    """Every call once on the device, each result copied back (which waits for the GPU):
    (seconds, [the outputs of each call, as NumPy arrays])."""
    results, start = [], time.perf_counter()
    for call in calls:
        try:
            result = call.run(ops, *(to_device(a) for a in call.inputs))
            results.append([cuda.as_numpy(r) for r in families.outputs(result)])
        except Exception as e:
            raise FamilyError(f"{call.name}: {one_line(e)}", fix_for(e)) from e
    return time.perf_counter() - start, results


def run_family(family, ops, to_device):
    """The family's calls on the device (twice: the first compiles) against NumPy."""
    before = precision.get_float32_matmul_precision()
    precision.set_float32_matmul_precision(family.precision)
    try:
        calls = family.calls()
        first, results = _run_on_device(calls, ops, to_device)
        second, _ = _run_on_device(calls, ops, to_device)
        for call, result in zip(calls, results):
            want = call.run(cpu, *(a.copy() for a in (call.reference or call.inputs)))
            problem = _compare(call, result, want)
            if problem:
                return Outcome(family.name, "FAILED", max(first - second, 0), second, problem,
                               f"a kernel computes wrong numbers on this device: {REPORT_FIX}")
        return Outcome(family.name, "passed", max(first - second, 0), second)
    except FamilyError as e:
        return Outcome(family.name, "FAILED", cause=e.cause, fix=e.fix)
    except Exception as e:  # building the inputs or NumPy's reference: gpucnn's own bug, reported as one
        return Outcome(family.name, "FAILED", cause=f"NumPy's side: {one_line(e)}", fix=REPORT_FIX)
    finally:
        precision.set_float32_matmul_precision(before)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m gpucnn.doctor",
        description="Print the versions the CUDA path depends on, then run every kernel family once on small "
                    "shapes against NumPy (on the GPU, else on the CPU emulator) and print a pass/fail table. "
                    "Exit status 0 when no family failed.")
    parser.add_argument("--device", choices=("auto", "cuda", "emulator"), default="auto",
                        help="auto: the GPU when CuPy sees one, else the CPU emulator (default); cuda: the GPU or "
                             "exit 1; emulator: the CPU emulator even where there is a GPU")
    parser.add_argument("--sanitize", action="store_true",
                        help="run the emulator in its checking mode (GPUCNN_EMULATOR_SANITIZE=1): out-of-bounds "
                             "accesses, races, uninitialized reads; implies --device emulator")
    return parser


def _choose_device(args):
    """("gpu" or "emulator", the first line saying where the kernels run), or (None, why not)."""
    if args.sanitize:
        if args.device == "cuda":
            return None, "--sanitize runs the CPU emulator, not the GPU: drop --device cuda"
        return "emulator", "the kernels run on the CPU emulator (--sanitize)"
    if args.device == "emulator":
        return "emulator", "the kernels run on the CPU emulator (--device emulator)"
    if cuda.emulator_enabled():
        if args.device == "cuda":
            return None, "--device cuda needs a GPU, but GPUCNN_CUDA_EMULATOR is set: unset it"
        return "emulator", "the kernels run on the CPU emulator (GPUCNN_CUDA_EMULATOR is set)"
    try:
        cuda.check_device("cuda")
    except RuntimeError as e:
        if args.device == "cuda":
            return None, f"no GPU: {e}"
        return "emulator", f"no GPU, so the kernels run on the CPU emulator instead: {e}"
    return "gpu", "the kernels run on the GPU"


def main(argv=None):
    args = _parser().parse_args(argv)
    device, headline = _choose_device(args)
    print(f"gpucnn doctor: {headline}")
    if device == "emulator":
        from .emulator import build
        # Device "cuda" becomes the emulator for this process, as the variable makes it for a user's.
        os.environ["GPUCNN_CUDA_EMULATOR"] = "1"
        if args.sanitize:
            os.environ["GPUCNN_EMULATOR_SANITIZE"] = "1"
        if build.sanitize_enabled():
            print("  in the emulator's checking mode (GPUCNN_EMULATOR_SANITIZE=1)")
    width = 14
    for label, value in environment():
        print(f"  {label:<{width}}{value}")
    if device is None:
        return 1
    if device == "emulator":
        print(f"  {'emulator':<{width}}{build.compiler_version().splitlines()[0]}; the tensor cores of "
              f"{build.target_arch()} (GPUCNN_EMULATOR_ARCH)")
    arch = gpu_arch() if device == "gpu" else None

    to_device = lambda a: cuda.to_device(np.ascontiguousarray(a), "cuda")  # noqa: E731 (a fresh copy each call)
    print(f"\n{'family':<20}{'result':<9}{'compile':>9}{'run':>9}")
    outcomes = []
    for family in families.FAMILIES:
        if family.precision != "highest" and arch is not None and arch < 80:
            outcome = Outcome(family.name, "skipped",
                              cause=f"sm_{arch} has no TF32 tensor cores: precision \"high\" runs the strict kernels")
        else:
            outcome = run_family(family, cuda_ops, to_device)
        outcomes.append(outcome)
        times = f"{outcome.compile_s:>8.2f}s{outcome.run_s:>8.3f}s" if outcome.status == "passed" else ""
        print(f"{family.name:<20}{outcome.status:<9}{times}".rstrip())
        if outcome.cause:
            print(f"    {outcome.cause}")
        if outcome.fix:
            print(f"    fix: {outcome.fix}")
        sys.stdout.flush()
    failed = sum(o.status == "FAILED" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    where = "on the CPU emulator" if device == "emulator" else "on the GPU"
    passed = len(outcomes) - failed - skipped
    print(f"\n{passed} of {len(outcomes)} kernel families passed {where}"
          + (f", {skipped} skipped" if skipped else "") + (f", {failed} FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
