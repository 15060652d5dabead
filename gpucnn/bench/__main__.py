"""python -m gpucnn.bench: gpucnn side by side with PyTorch, in one process, on one device.

Layer by layer (forward, backward-data and backward-weight of each convolution timed
apart; max pooling forward and backward) and whole SGD training steps, from the same
weights and data in both frameworks. The contestants run in turn, after warm-up, for
several rounds; the report gives medians and the ratio gpucnn / PyTorch, a table per
thread count (on the CPU by default one core, then all) and, on a GPU, per float32
precision (gpucnn's "highest" against PyTorch with TF32 off, "high" against TF32 on), and
the JSON every round's time.
See docs/benchmarks.md for the latest tables and how they were taken.

Without PyTorch installed (it comes with the `bench` extra) gpucnn is timed alone.
"""
import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .. import cuda, nn, precision as float32_precision
from ..nn.init import manual_seed
from ..backends import cpu
from . import cases, distributed, report
from .rivals import Gpucnn, Torch, torch_version


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m gpucnn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where both frameworks run (default: cuda when CuPy sees a GPU, else cpu)")
    p.add_argument("--threads", default=None,
                   help="comma-separated CPU thread counts, a table each, for both: torch.set_num_threads, "
                        "gpucnn's convolution tiles and the BLAS pools; 1 runs pinned to one CPU "
                        "(default on the CPU: 1 and the CPUs this process may use; on a GPU: the latter)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the tables' medians count: wall-clock time, or (only with --threads 1) this "
                        "process's CPU time, which other work on a busy machine inflates less")
    p.add_argument("--quick", action="store_true", help="LeNet-5's layers and training step only, fewer rounds (under a minute)")
    p.add_argument("--only", help="comma-separated words: run the cases whose names contain one (e.g. lenet,vgg.conv64)")
    p.add_argument("--repeat", type=int, help="timed rounds per case (default 5, --quick 3)")
    p.add_argument("--warmup", type=int, help="untimed calls per contestant before the rounds (default 2, --quick 1)")
    p.add_argument("--no-torch", action="store_true", help="time gpucnn alone even where PyTorch is installed")
    p.add_argument("--precision", choices=("highest", "high", "both"), default="both",
                   help="on a GPU, float32 products: gpucnn's set_float32_matmul_precision('highest') against "
                        "PyTorch with cudnn.allow_tf32 and cuda.matmul.allow_tf32 off, or 'high' against both on "
                        "(TF32 tensor cores), or both, a table each (default: both); on the CPU neither library "
                        "uses TF32, so there is one table whatever this says")
    p.add_argument("--json", type=Path, help="where to write the results (default runs/bench/<device>-<time>.json)")
    p.add_argument("--distributed", action="store_true",
                   help="instead: data-parallel LeNet-5 training steps on MPI ranks (needs gpucnn[mpi]), see --ranks")
    p.add_argument("--ranks", default="1,2", help="with --distributed: comma-separated rank counts (default 1,2); --threads are shared out among the ranks")
    args = p.parse_args(argv)
    try:
        args.threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    except ValueError:
        p.error(f"--threads must be comma-separated whole numbers, got {args.threads!r}")
    if args.threads is not None and not all(t >= 1 for t in args.threads):
        p.error(f"--threads must be positive, got {','.join(map(str, args.threads))}")
    if args.clock == "cpu" and args.threads != [1]:
        p.error("--clock cpu needs --threads 1: a process's CPU time adds up all its threads' time")
    if args.repeat is not None and args.repeat < 1:
        p.error(f"--repeat must be positive, got {args.repeat}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be non-negative, got {args.warmup}")
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    return args


def precisions(device, choice):
    """The float32 precisions to time: on a GPU, "highest" and/or "high"; on the CPU one run,
    None, since neither library computes in TF32 there (gpucnn runs as "highest")."""
    if device == "cpu":
        return [None]
    return ["highest", "high"] if choice == "both" else [choice]


def precision_note(precision, torch_ok):
    """What a run's precision means for the contestants, for its table's title."""
    if precision is None:
        return "float32 (no TF32 on the CPU for either library: --precision changes nothing here)"
    tf32 = precision == "high"
    torch = f", torch cudnn.allow_tf32={tf32} cuda.matmul.allow_tf32={tf32}" if torch_ok else ""
    return f"gpucnn set_float32_matmul_precision({precision!r}){torch}"


def contestants(device, precision, torch_ok):
    """gpucnn under the run's precision, and PyTorch in the matching mode when it is there."""
    rivals = [Gpucnn(device, precision or "highest")]
    if torch_ok:
        rivals.append(Torch(device, tf32=precision == "high"))
    return rivals


def loss_tolerance(precision):
    """How close the two frameworks' first losses must be: in float32 to 1e-4; with TF32 on
    both sides (10 mantissa bits per operand, each library rounding its own way) to 1e-2."""
    return dict(rtol=1e-2, atol=1e-3) if precision == "high" else dict(rtol=1e-4, atol=1e-5)


def default_device():
    """cuda on a real GPU; the CUDA emulator is for checking kernels, not for timing them."""
    return "cuda" if cuda.gpu_available() and not cuda.emulator_enabled() else "cpu"


_blas_limits = None  # threadpoolctl's limit, kept alive: it lasts as long as this object


def limit_threads(n, torch_rival):
    """Run every CPU pool with n threads, and a single thread pinned to one CPU; returns what
    was done, for the report."""
    cpu.set_num_threads(n)
    if torch_rival is not None:
        torch_rival.torch.set_num_threads(n)
    global _blas_limits
    _blas_limits = threadpool_limits(n)
    if n == 1 and hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})  # this (the calling) thread: the one that computes at n = 1
        return f"1 thread for gpucnn, BLAS (threadpoolctl) and PyTorch, pinned to CPU {core}"
    return f"{n} threads for gpucnn's tiles, BLAS (threadpoolctl) and PyTorch"


# Idle threads sleep at once instead of spinning, so that one contestant's pool does not
# take the cores from the other's turn. Measured on the 2-CPU VM: in 50 ms of idling after
# a 2-thread op, PyTorch's OpenMP threads burnt 4.5 ms of CPU and OpenBLAS's 16 ms; with
# these settings both burnt 0.04 ms. Both libraries read them when they load.
QUIET_THREADS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}


def quiet_idle_threads():
    """Run this command again with QUIET_THREADS in its environment, unless it already has them."""
    missing = {k: v for k, v in QUIET_THREADS.items() if k not in os.environ}
    if missing:
        os.execve(sys.executable, [sys.executable, "-m", "gpucnn.bench", *sys.argv[1:]], {**os.environ, **missing})


class Clock:
    """Times fn() as a rival does, and the process's CPU time alongside on the CPU."""

    def __init__(self, device):
        self.cpu = device == "cpu"

    def __call__(self, rival, fn):
        start = time.process_time()
        wall = rival.time(fn)
        return wall, (time.process_time() - start if self.cpu else None)


def measure(rivals, fns, warmup, repeat, clock):
    """Seconds per call of fns[name] per rival, every round's: {name: {"wall": [...], "cpu": [...]}}.

    The rivals are timed in turn each round; each turn starts with an untimed call, so that
    what the previous rival left behind (caches, threads still waking) does not land on
    this one's time.
    """
    for r in rivals:
        for _ in range(warmup):
            r.time(fns[r.name])
    times = {r.name: {"wall": [], "cpu": []} for r in rivals}
    for _ in range(repeat):
        for r in rivals:
            r.time(fns[r.name])
            wall, cpu_time = clock(r, fns[r.name])
            times[r.name]["wall"].append(wall)
            times[r.name]["cpu"].append(cpu_time)
    return times


def run_layers(layers, rivals, args, rng, clock):
    results = []
    for case in layers:
        is_conv = isinstance(case, cases.Conv)
        shape = (case.N, case.C, case.W) if is_conv and case.nd == 1 else (case.N, case.C, case.H, case.W)
        x = rng.standard_normal(shape, dtype=np.float32)
        if is_conv:
            w = rng.standard_normal(case.w_shape, dtype=np.float32) * 0.1
            b = rng.standard_normal(case.O, dtype=np.float32)
            out = case.out_hw[1:] if case.nd == 1 else case.out_hw
            dy = rng.standard_normal((case.N, case.O) + out, dtype=np.float32)
            fns = {r.name: r.conv(case, x, w, b, dy) for r in rivals}
            ops = cases.CONV_OPS
        elif isinstance(case, cases.Norm):
            dy = rng.standard_normal(shape, dtype=np.float32)
            fns = {r.name: r.norm(case, x, dy) for r in rivals}
            ops = cases.NORM_OPS
        else:
            dy = rng.standard_normal((case.N, case.C) + case.out_hw, dtype=np.float32)
            fns = {r.name: r.pool(case, x, dy) for r in rivals}
            ops = cases.POOL_OPS
        by_op = {}
        for op in ops:
            by_op[op] = measure(rivals, {name: f[op] for name, f in fns.items()}, args.warmup, args.repeat, clock)
            results.append(_result(case, op, by_op[op], rivals, args.clock))
        # What a layer costs in training: its ops of each round added up.
        total = {r.name: {k: [sum(v) if None not in v else None for v in zip(*(by_op[op][r.name][k] for op in ops))]
                          for k in ("wall", "cpu")} for r in rivals}
        results.append(_result(case, cases.FORWARD_BACKWARD, total, rivals, args.clock))
    return results


def _milliseconds(samples):
    return [None if s is None else s * 1e3 for s in samples]


def _medians(times, clock):
    return {name: statistics.median(t[clock]) for name, t in times.items()}


def _samples(times):
    """Every round's milliseconds, wall-clock and (on the CPU) process CPU time, per rival."""
    return {"samples_ms": {n: _milliseconds(t["wall"]) for n, t in times.items()},
            "cpu_samples_ms": {n: _milliseconds(t["cpu"]) for n, t in times.items()}}


def _result(case, op, times, rivals, clock):
    seconds = _medians(times, clock)
    mine = seconds["gpucnn"]
    flops = case.flops() * (len(cases.CONV_OPS) if op == cases.FORWARD_BACKWARD else 1)
    res = {
        "case": case.name, "shape": case.shape(), "op": op,
        "ms": {n: s * 1e3 for n, s in seconds.items()},
        "ratio": {r.name: mine / seconds[r.name] for r in rivals[1:]},
        "flops": flops, "bytes": case.bytes(op),
        "flop_per_s": flops / mine, "bytes_per_s": case.bytes(op) / mine,
    }
    res.update(_samples(times))
    print(f"  {case.name:20s} {op:16s} " + "  ".join(f"{n} {s * 1e3:9.3f} ms" for n, s in seconds.items()),
          file=sys.stderr, flush=True)
    return res


def run_training(trainings, rivals, args, rng, clock, precision=None):
    results = []
    for case in trainings:
        weights = case.build(nn).state_dict()
        x = rng.standard_normal((case.N, case.C, case.H, case.W), dtype=np.float32)
        y = rng.integers(0, case.classes, size=case.N)
        steps = {r.name: r.trainer(case.build, weights, x, y) for r in rivals}
        # The first two losses: the forward pass from the same weights, then after one update.
        losses = {r.name: [] for r in rivals}
        for r in rivals:
            for _ in range(2):
                r.time(lambda: losses[r.name].append(r.loss_value(steps[r.name]())))
        times = measure(rivals, steps, max(0, args.warmup - 2), args.repeat, clock)
        seconds = _medians(times, args.clock)
        res = {
            "case": case.name, "shape": case.shape(), "batch": case.N,
            "ms": {n: s * 1e3 for n, s in seconds.items()},
            "images_per_s": {n: case.N / s for n, s in seconds.items()},
            "ratio": {r.name: seconds["gpucnn"] / seconds[r.name] for r in rivals[1:]},
            "losses": losses,
            "losses_agree": all(np.allclose(losses["gpucnn"], losses[r.name], **loss_tolerance(precision))
                                for r in rivals[1:]),
        }
        res.update(_samples(times))
        results.append(res)
        print(f"  {case.name:20s} train step       " + "  ".join(f"{n} {s * 1e3:9.2f} ms" for n, s in seconds.items())
              + ("" if res["losses_agree"] else f"  LOSSES DIFFER {losses}"), file=sys.stderr, flush=True)
    return results


def device_name(device, gpucnn_rival):
    if device == "cpu":
        return report.cpu_name()
    xp = gpucnn_rival.xp
    if xp is not cuda.cupy_if_loaded():  # the emulator's stand-in for CuPy
        return f"CUDA emulator on {report.cpu_name()}"
    return xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)["name"].decode()


def main(argv=None):
    try:
        return run(argv)
    except cuda.DeviceSetupError as e:  # an old driver, a kernel module NVRTC refuses: one line, no traceback
        sys.exit(f"python -m gpucnn.bench: error: {e}")


def run(argv):
    args = parse_args(argv)
    if args.distributed:
        return distributed.run(args)
    device = args.device or default_device()
    cuda.check_device(device)
    all_cpus = cpu.get_num_threads()
    threads = args.threads or ([1, all_cpus] if device == "cpu" and all_cpus > 1 else [all_cpus])
    torch_ok = torch_version() is not None and not args.no_torch
    probe = Gpucnn(device)
    name = device_name(device, probe)
    cupy_module = probe.xp if probe.xp is cuda.cupy_if_loaded() else None
    info = report.machine(device, name, threads, torch_version() if torch_ok else None,
                          cupy_module.__version__ if cupy_module else None)
    info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info["clock"] = args.clock
    info["precisions"] = precisions(device, args.precision)
    info["environment"] = {k: os.environ.get(k) for k in QUIET_THREADS}
    info["command"] = "python -m gpucnn.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    peaks = report.gpu_peaks(name) if device == "cuda" else None

    only = args.only or (",".join(cases.QUICK) if args.quick else None)
    layers = cases.select(cases.LAYERS, only)
    trainings = cases.select(cases.TRAINING, only)
    if not layers and not trainings:
        names = ", ".join(c.name for c in [*cases.LAYERS, *cases.TRAINING])
        sys.exit(f"python -m gpucnn.bench: error: --only {only!r} matches no case; the cases are: {names}")
    clock = Clock(device)
    runs = []
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    users_precision = float32_precision.get_float32_matmul_precision()
    try:
        for n in threads:
            for precision in precisions(device, args.precision):
                rivals = contestants(device, precision, torch_ok)
                setup = limit_threads(n, rivals[1] if torch_ok else None)
                print(f"gpucnn bench on {device} ({name}), {setup}, {precision_note(precision, torch_ok)}; "
                      f"{len(layers)} layers, {len(trainings)} networks, {args.repeat} rounds", file=sys.stderr)
                rng = np.random.default_rng(0)
                manual_seed(0)  # every run from the same weights and data: its losses compare across runs
                runs.append({"threads": n, "thread_setup": setup, "precision": precision,
                             "torch_tf32": None if precision is None or not torch_ok else precision == "high",
                             "load_average_at_start": report.load_average(),
                             "layers": run_layers(layers, rivals, args, rng, clock),
                             "training": run_training(trainings, rivals, args, rng, clock, precision),
                             "load_average_at_end": report.load_average()})
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        float32_precision.set_float32_matmul_precision(users_precision)

    names = [r.name for r in rivals[1:]]
    torch_note = info["torch"] or ("not used (--no-torch)" if args.no_torch else "not installed")
    print(f"\ngpucnn {info['gpucnn']}, numpy {info['numpy']}, torch {torch_note}"
          + (f", cupy {info['cupy']}" if info["cupy"] else "") + f", python {info['python']}; "
          + ", ".join(f"{k}={v}" for k, v in info["environment"].items()))
    for run in runs:
        print(f"\n## {device}: {name}, {run['thread_setup']}, {info['date']}, {args.clock} clock, load average "
              f"{run['load_average_at_start']} at start, {run['load_average_at_end']} at end\n")
        print(f"precision: {precision_note(run['precision'], torch_ok)}\n")
        if run["layers"]:
            print(report.layer_table(run["layers"], names, peaks, run["precision"]) + "\n")
        if run["training"]:
            print(report.train_table(run["training"], names) + "\n")
        for rival in names:
            print(report.geometric_mean_line(run, rival))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or Path("runs") / "bench" / f"{device}-{stamp}.json"
    report.write_json(path, {"machine": info, "peaks": peaks, "runs": runs})
    print(f"results written to {path}")
    if not all(r["losses_agree"] for run in runs for r in run["training"]):
        print("error: the frameworks' losses differ, so they did not run the same computation", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    quiet_idle_threads()
    sys.exit(main())
