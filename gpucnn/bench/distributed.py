"""python -m gpucnn.bench --distributed: data-parallel LeNet-5 training steps on 1, 2, ... MPI
ranks (the `mpi` extra), images per second, the time of gpucnn's gradient all-reduce and,
for comparison, of MPI's own Allreduce of the same buffers.

The parent process starts `mpiexec -n N python -m gpucnn.bench.distributed` for each N;
rank 0 of each job writes its timings to a JSON file that the parent reads and reports.
Two ways to add ranks: the same global batch split N ways (strong scaling, what changes
when `gpucnn.train --distributed` gets more processes), and the same batch per rank
(weak scaling, N times the images per step).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import nn, optim
from ..backends import cpu
from . import cases, report

CASE = cases.TRAINING[0]  # LeNet-5, batch 128, 28x28


def launch(ranks, threads, batch, steps, warmup):
    """Run one mpiexec job and return rank 0's timings."""
    from ..distributed.launch import mpiexec
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "gpucnn.bench.distributed",
               "--threads", str(threads), "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup),
               "--json", out]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        subprocess.run(cmd, check=True, env=env, timeout=600)
        with open(out) as f:
            return json.load(f)


def run(args):
    """The parent: every rank count in args.ranks, strong and weak scaling; prints a Markdown table."""
    ranks = [int(r) for r in args.ranks.split(",")]
    steps, warmup = args.repeat * 4, max(args.warmup, 1)
    load_start = report.load_average()
    rows = []
    # --threads in all (the largest count given; default the CPUs this process may use),
    # shared out among the ranks
    total = max(args.threads) if args.threads else cpu.get_num_threads()
    for n in ranks:
        threads = max(1, total // n)
        for scaling, batch in (("strong", CASE.N // n), ("weak", CASE.N)):
            if scaling == "weak" and n == 1:
                continue  # the same job as strong with one rank
            r = launch(n, threads, batch, steps, warmup)
            rows.append(dict(r, scaling=scaling, threads=threads))
            print(f"  {n} ranks x {threads} threads, {scaling}: {r['images_per_s']:.0f} img/s", file=sys.stderr, flush=True)
    print(f"\n## data parallel LeNet-5 ({CASE.shape()} per step on one rank), load average {load_start} at start, "
          f"{report.load_average()} at end\n")
    print("| ranks x threads | scaling | global batch | step ms | all-reduce ms | MPI_Allreduce ms | images/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['ranks']} x {r['threads']} | {r['scaling']} | {r['global_batch']} | {r['step_ms']:.2f} | "
              f"{r['allreduce_ms']:.3f} | {r['mpi_allreduce_ms']:.3f} | {r['images_per_s']:.0f} |")
    return 0


def worker(argv):
    """One rank: DistributedDataParallel LeNet-5 SGD steps; rank 0 writes the medians."""
    from .. import distributed
    p = argparse.ArgumentParser(prog="python -m gpucnn.bench.distributed")
    for name in ("threads", "batch", "steps", "warmup"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    cpu.set_num_threads(args.threads)
    world = distributed.init()
    rng = np.random.default_rng(world.rank)
    x = rng.standard_normal((args.batch, CASE.C, CASE.H, CASE.W), dtype=np.float32)
    y = rng.integers(0, CASE.classes, size=args.batch)
    model = distributed.DistributedDataParallel(CASE.build(nn), world)
    criterion = nn.CrossEntropyLoss(validate_args=False)  # y is drawn from range(classes) above
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step_times, reduce_times = [], []
    for i in range(args.warmup + args.steps):
        world.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        criterion(model(x), y)
        model.backward(criterion.backward(), input_grad=False)
        opt.step()
        t1 = time.perf_counter()
        model.reduce_gradients(args.batch)  # once more alone: the all-reduce's share of the step
        t2 = time.perf_counter()
        if i >= args.warmup:
            step_times.append(t1 - t0)
            reduce_times.append(t2 - t1)
    # For comparison: MPI's own blocking Allreduce of buffers of the same sizes, which is
    # faster but not promised to give every rank the same bits (see distributed/host.py).
    buffers = [b.buffer.copy() for b in model.buckets]
    plain_times = []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        for buf in buffers:
            world.comm.Allreduce(world.MPI.IN_PLACE, buf, op=world.MPI.SUM)
        plain_times.append(time.perf_counter() - t0)
    # The slowest rank sets the pace: every rank's median, the largest reported.
    step, reduce, plain = world.max(*(statistics.median(t) for t in (step_times, reduce_times,
                                                                      plain_times[args.warmup:])))
    if world.is_root:
        result = {"ranks": world.size, "local_batch": args.batch, "global_batch": args.batch * world.size,
                  "step_ms": step * 1e3, "allreduce_ms": reduce * 1e3, "mpi_allreduce_ms": plain * 1e3,
                  "images_per_s": args.batch * world.size / step}
        with open(args.json, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    from ..distributed import abort_on_error
    abort_on_error(worker)(sys.argv[1:])
