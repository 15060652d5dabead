"""The deliberately wrong kernels of tests/sanitizer_bugs.cu on a GPU under NVIDIA's
compute-sanitizer, each with the tool that covers its class of bug, beside the emulator's
checking-mode report of the same launch: a Markdown table for comparing the two.

    python scripts/sanitizer_bugs.py [--out FILE]     # needs CuPy, a GPU and compute-sanitizer
    python scripts/sanitizer_bugs.py --launch NAME    # one launch on the GPU (what the tools run)
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sanitizer_bugs import LAUNCHES, SOURCE  # noqa: E402


def launch_on_gpu(name):
    import cupy

    from gpucnn.backends.cuda import KERNEL_OPTIONS

    spec = LAUNCHES[name]
    args = tuple(cupy.asarray(a) if hasattr(a, "shape") and a.shape else a for a in spec.args())
    kernel = cupy.RawModule(code=SOURCE, options=KERNEL_OPTIONS).get_function(name)
    kernel((spec.grid,), (spec.block,), args, shared_mem=spec.shared_mem)
    cupy.cuda.runtime.deviceSynchronize()


def emulator_report(name):
    from gpucnn.emulator import KernelError, RawModule

    spec = LAUNCHES[name]
    try:
        RawModule(code=SOURCE, sanitize=True).get_function(name)(spec.grid, spec.block, spec.args(),
                                                                 shared_mem=spec.shared_mem)
    except KernelError as e:
        return f"{e.check}: {str(e).splitlines()[0]}"
    return "no report"


def sanitizer_report(name, tool, tool_path):
    command = [tool_path, "--tool", tool, "--error-exitcode", "99", sys.executable, __file__, "--launch", name]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "timed out after 300 s"
    lines = [line.removeprefix("========= ").strip() for line in (result.stdout + result.stderr).splitlines()]
    errors = [line for line in lines if line and ("rror" in line or "azard" in line or "arrier" in line)]
    if errors:
        return " / ".join(errors[:2])
    return "no report" if result.returncode == 0 else f"exit {result.returncode}: {lines[-1] if lines else ''}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch", choices=sorted(LAUNCHES), help="run one launch on the GPU and exit")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    options = parser.parse_args()
    if options.launch:
        launch_on_gpu(options.launch)
        return
    tool_path = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not Path(tool_path).exists():
        sys.exit("sanitizer_bugs.py: error: compute-sanitizer is not on PATH nor in /usr/local/cuda/bin")
    rows = ["| kernel | emulator (checking mode) | compute-sanitizer tool | compute-sanitizer |", "|---|---|---|---|"]
    for name, spec in LAUNCHES.items():
        gpu = sanitizer_report(name, spec.tool, tool_path).replace("|", "\\|")
        rows.append(f"| {name} | {emulator_report(name).replace('|', chr(92) + '|')} | {spec.tool} | {gpu} |")
        print(rows[-1], flush=True)
    if options.out:
        options.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
