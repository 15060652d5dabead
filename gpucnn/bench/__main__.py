"""python -m gpucnn.bench: gpucnn side by side with PyTorch, in one process, on one device.

Layer by layer (forward, backward-data and backward-weight of each convolution timed
apart; max pooling forward and backward) and whole SGD training steps, from the same
weights and data in both frameworks. The contestants run in turn, after warm-up, for
several rounds; the report gives medians and the ratio gpucnn / PyTorch. See
docs/benchmarks.md for the latest tables and how they were taken.

Without PyTorch installed (it comes with the `bench` extra) gpucnn is timed alone.
"""
import argparse
import datetime
import statistics
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .. import cuda, nn
from ..backends import cpu
from . import cases, distributed, report
from .rivals import Gpucnn, Torch, torch_version


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m gpucnn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where both frameworks run (default: cuda when CuPy sees a GPU, else cpu)")
    p.add_argument("--threads", type=int, default=cpu.get_num_threads(),
                   help="CPU threads for both: torch.set_num_threads, gpucnn's convolution tiles and "
                        "the BLAS pools (default: the CPUs this process may use)")
    p.add_argument("--quick", action="store_true", help="LeNet-5's layers and training step only, fewer rounds (under a minute)")
    p.add_argument("--only", help="comma-separated words: run the cases whose names contain one (e.g. lenet,vgg.conv64)")
    p.add_argument("--repeat", type=int, help="timed rounds per case (default 5, --quick 3)")
    p.add_argument("--warmup", type=int, help="untimed calls per contestant before the rounds (default 2, --quick 1)")
    p.add_argument("--no-torch", action="store_true", help="time gpucnn alone even where PyTorch is installed")
    p.add_argument("--json", type=Path, help="where to write the results (default runs/bench/<device>-<time>.json)")
    p.add_argument("--distributed", action="store_true",
                   help="instead: data-parallel LeNet-5 training steps on MPI ranks (needs gpucnn[mpi]), see --ranks")
    p.add_argument("--ranks", default="1,2", help="with --distributed: comma-separated rank counts (default 1,2); --threads are shared out among the ranks")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be positive, got {args.threads}")
    if args.repeat is not None and args.repeat < 1:
        p.error(f"--repeat must be positive, got {args.repeat}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be non-negative, got {args.warmup}")
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    return args


def default_device():
    """cuda on a real GPU; the CUDA emulator is for checking kernels, not for timing them."""
    return "cuda" if cuda.gpu_available() and not cuda.emulator_enabled() else "cpu"


_blas_limits = None  # threadpoolctl's limit, kept alive: it lasts as long as this object


def limit_threads(n, torch_rival):
    """Run every CPU pool with n threads; returns what was done, for the report."""
    cpu.set_num_threads(n)
    if torch_rival is not None:
        torch_rival.torch.set_num_threads(n)
    global _blas_limits
    _blas_limits = threadpool_limits(n)
    return f"{n} threads for gpucnn's tiles, BLAS (threadpoolctl) and PyTorch"


def measure(rivals, fns, warmup, repeat):
    """Median seconds of one call of fns[name] per rival, the rivals timed in turn each round.

    Each turn starts with an untimed call, so that what the previous rival left running
    (BLAS and OpenMP threads spinning before they sleep) does not land on this one's time.
    """
    for r in rivals:
        for _ in range(warmup):
            r.time(fns[r.name])
    times = {r.name: [] for r in rivals}
    for _ in range(repeat):
        for r in rivals:
            r.time(fns[r.name])
            times[r.name].append(r.time(fns[r.name]))
    return {name: statistics.median(t) for name, t in times.items()}


def run_layers(layers, rivals, args, rng):
    results = []
    for case in layers:
        is_conv = isinstance(case, cases.Conv)
        shape = (case.N, case.C, case.W) if is_conv and case.nd == 1 else (case.N, case.C, case.H, case.W)
        x = rng.standard_normal(shape, dtype=np.float32)
        if is_conv:
            w = rng.standard_normal((case.O, case.C) + case.kernel[2 - case.nd:], dtype=np.float32) * 0.1
            b = rng.standard_normal(case.O, dtype=np.float32)
            out = case.out_hw[1:] if case.nd == 1 else case.out_hw
            dy = rng.standard_normal((case.N, case.O) + out, dtype=np.float32)
            fns = {r.name: r.conv(case, x, w, b, dy) for r in rivals}
        else:
            dy = rng.standard_normal((case.N, case.C) + case.out_hw, dtype=np.float32)
            fns = {r.name: r.pool(case, x, dy) for r in rivals}
        for op in cases.CONV_OPS if is_conv else cases.POOL_OPS:
            seconds = measure(rivals, {name: f[op] for name, f in fns.items()}, args.warmup, args.repeat)
            results.append(_result(case, op, seconds, rivals))
            print(f"  {case.name:20s} {op:16s} " + "  ".join(f"{n} {s * 1e3:9.3f} ms" for n, s in seconds.items()),
                  file=sys.stderr, flush=True)
    return results


def _result(case, op, seconds, rivals):
    mine = seconds["gpucnn"]
    return {
        "case": case.name, "shape": case.shape(), "op": op,
        "ms": {n: s * 1e3 for n, s in seconds.items()},
        "ratio": {r.name: mine / seconds[r.name] for r in rivals[1:]},
        "flops": case.flops(), "bytes": case.bytes(op),
        "flop_per_s": case.flops() / mine, "bytes_per_s": case.bytes(op) / mine,
    }


def run_training(trainings, rivals, args, rng):
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
        seconds = measure(rivals, steps, max(0, args.warmup - 2), args.repeat)
        res = {
            "case": case.name, "shape": case.shape(), "batch": case.N,
            "ms": {n: s * 1e3 for n, s in seconds.items()},
            "images_per_s": {n: case.N / s for n, s in seconds.items()},
            "ratio": {r.name: seconds["gpucnn"] / seconds[r.name] for r in rivals[1:]},
            "losses": losses,
            # TF32 rounds convolution inputs to 10 mantissa bits: only strict fp32 must agree.
            "losses_agree": all(np.allclose(losses["gpucnn"], losses[r.name], rtol=1e-4, atol=1e-5)
                                for r in rivals[1:] if not r.tf32),
        }
        results.append(res)
        print(f"  {case.name:20s} train step       " + "  ".join(f"{n} {s * 1e3:9.2f} ms" for n, s in seconds.items())
              + ("" if res["losses_agree"] else f"  LOSSES DIFFER {losses}"), file=sys.stderr, flush=True)
    return results


def device_name(device, gpucnn_rival):
    if device == "cpu":
        return report.cpu_name()
    xp = gpucnn_rival.xp
    if xp is np:
        return f"CUDA emulator on {report.cpu_name()}"
    return xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)["name"].decode()


def main(argv=None):
    args = parse_args(argv)
    if args.distributed:
        return distributed.run(args)
    device = args.device or default_device()
    cuda.check_device(device)
    torch_ok = torch_version() is not None and not args.no_torch
    rivals = [Gpucnn(device)]
    if torch_ok:
        rivals.append(Torch(device))
        if device == "cuda":
            rivals.append(Torch(device, tf32=True))
    threads = limit_threads(args.threads, rivals[1] if torch_ok else None)
    name = device_name(device, rivals[0])
    cupy_module = rivals[0].xp if rivals[0].xp is not np else None
    info = report.machine(device, name, args.threads, torch_version() if torch_ok else None,
                          cupy_module.__version__ if cupy_module else None)
    info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info["thread_setup"] = threads
    info["command"] = "python -m gpucnn.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    peaks = report.gpu_peaks(name) if device == "cuda" else None

    only = args.only or (",".join(cases.QUICK) if args.quick else None)
    layers = cases.select(cases.LAYERS, only)
    trainings = cases.select(cases.TRAINING, only)
    if not layers and not trainings:
        names = ", ".join(c.name for c in [*cases.LAYERS, *cases.TRAINING])
        sys.exit(f"python -m gpucnn.bench: error: --only {only!r} matches no case; the cases are: {names}")
    print(f"gpucnn bench on {device} ({name}), {threads}; "
          f"{len(layers)} layers, {len(trainings)} networks, {args.repeat} rounds", file=sys.stderr)
    rng = np.random.default_rng(0)
    layer_results = run_layers(layers, rivals, args, rng)
    train_results = run_training(trainings, rivals, args, rng)

    info["load_average_at_end"] = report.load_average()
    names = [r.name for r in rivals[1:]]
    print(f"\n## {device}: {name}, {args.threads} threads, {info['date']}, "
          f"load average {info['load_average_at_start']} at start, {info['load_average_at_end']} at end")
    torch_note = info["torch"] or ("not used (--no-torch)" if args.no_torch else "not installed")
    print(f"gpucnn {info['gpucnn']}, numpy {info['numpy']}, torch {torch_note}"
          + (f", cupy {info['cupy']}" if info["cupy"] else "") + f", python {info['python']}\n")
    if layer_results:
        print(report.layer_table(layer_results, names, peaks) + "\n")
    if train_results:
        print(report.train_table(train_results, names) + "\n")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or Path("runs") / "bench" / f"{device}-{stamp}.json"
    report.write_json(path, {"machine": info, "peaks": peaks, "layers": layer_results, "training": train_results})
    print(f"results written to {path}")
    if not all(r["losses_agree"] for r in train_results):
        print("error: the frameworks' losses differ, so they did not run the same computation", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
