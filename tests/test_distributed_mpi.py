"""Data parallel across real MPI processes: the MPICH wheel's mpiexec starts 2 or 3 ranks.

Each test starts `mpiexec -n N python tests/test_distributed_mpi.py SCENARIO`; the
scenarios are the functions at the end, run inside the ranks. Skipped where the `mpi`
extra (mpi4py and MPICH) is not installed.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "conv4k3p1 pool2 fc16"  # small: the point is the arithmetic, not the model


def mpiexec_or_skip():
    pytest.importorskip("mpi4py")
    from gpucnn.distributed.launch import mpiexec
    try:
        return mpiexec()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def launch(n, *args, timeout=120, env=None, mpmd=None):
    """Run `mpiexec -n n python -m ...args` (or an MPMD line) to its end; (returncode, output, seconds)."""
    cmd = [mpiexec_or_skip()]
    for i, part in enumerate(mpmd or [(n, args)]):
        cmd += ([":"] if i else []) + ["-n", str(part[0]), sys.executable, *part[1]]
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPIEXEC_TIMEOUT=str(timeout - 10), **(env or {}))
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - t0


def scenario(name, n, *args, **kw):
    return launch(n, os.path.abspath(__file__), name, *map(str, args), **kw)


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("ranks, overlap", [(2, "overlap"), (3, "overlap"), (2, "after")])
def test_ranks_step_as_one_process_with_the_global_batch(ranks, overlap):
    rc, out, _ = scenario("equivalence", ranks, overlap)
    assert rc == 0, out
    assert out.count("equivalence ok") == ranks, out


def test_emulator_arrays_are_summed_through_mpi():
    rc, out, _ = scenario("emulator_arrays", 2)
    assert rc == 0, out
    assert out.count("emulator arrays ok") == 2, out


def test_an_exception_on_one_rank_stops_every_rank():
    rc, out, seconds = scenario("raise_on_rank_1", 2)
    assert rc != 0, out
    assert "bad record on rank 1" in out and "rank 1 of 2 failed: stopping every rank" in out, out
    assert "rank 0 finished" not in out, out
    assert seconds < 30, out


def test_a_hung_rank_is_named_after_the_timeout():
    rc, out, seconds = scenario("hang_on_rank_1", 2)
    assert rc != 0, out
    assert "rank 0: gradient bucket 0: reduce-scatter did not complete within 2 s: no word from rank 1" in out, out
    assert seconds < 40, out


def test_a_killed_rank_ends_the_job():
    rc, out, seconds = scenario("kill_rank_1", 2)
    assert rc != 0, out
    assert "rank 0 finished" not in out, out
    assert seconds < 30, out


def test_a_rank_stuck_in_nccl_init_stops_the_job_after_the_timeout(tmp_path):
    rc, out, seconds = scenario("nccl_init_hang", 2, env={"GPUCNN_CUDA_EMULATOR": "0", "TMPDIR": str(tmp_path)})
    assert rc != 0, out
    assert ("rank 0: NCCL init (every rank joins the communicator) did not complete within 2 s: every rank is "
            "alive but the collective did not complete; NCCL_DEBUG=INFO shows what NCCL waits for") in out, out
    assert "rank 0 finished" not in out, out
    assert seconds < 40, out


def _weights(run):
    from gpucnn import checkpoint
    return checkpoint.load_model(run)[0]


def test_train_on_2_ranks_resumed_on_3_ends_as_one_process(tmp_path):
    """gpucnn.train --distributed: 161 digits in batches of 32 (the last batch, 1 image, leaves
    ranks with nothing), one epoch on 2 ranks, resumed for the second on 3, against one process."""
    from gpucnn import train
    args = ["--limit-train", "161", "--limit-test", "50", "--no-plots", "--device", "cpu"]
    one, many = str(tmp_path / "one"), str(tmp_path / "many")
    assert train.main(args + ["--epochs", "2", "--out", one]) == 0
    rc, out, _ = launch(2, "-m", "gpucnn.train", "--distributed", "--epochs", "1", *args, "--out", many)
    assert rc == 0, out
    assert out.count("epoch   1/1") == 1 and out.count("training from epoch 1") == 1, out  # rank 0 alone prints
    assert "data parallel over 2 ranks" in out, out
    rc, out, _ = launch(3, "-m", "gpucnn.train", "--distributed", "--resume", "--epochs", "2", "--out", many)
    assert rc == 0, out
    assert "resuming at epoch 2 of 2" in out and "data parallel over 3 ranks" in out, out
    mine, reference = _weights(many), _weights(one)
    assert sorted(mine) == sorted(reference)
    for name in reference:
        np.testing.assert_allclose(mine[name], reference[name], rtol=1e-4, atol=1e-6, err_msg=name)
    rows = [_metrics(run) for run in (many, one)]
    assert [r["epoch"] for r in rows[0]] == ["1", "2"]
    for mine, reference in zip(*rows):  # sharded evaluation, sums over ranks: as one process
        for key in ("train_loss", "test_loss"):
            assert float(mine[key]) == pytest.approx(float(reference[key]), rel=1e-3), key
        for key, images in (("train_accuracy", 161), ("test_accuracy", 50)):  # within one image
            assert abs(float(mine[key]) - float(reference[key])) <= 1.01 / images, key


def _metrics(run):
    import csv
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_a_bad_data_file_on_one_rank_stops_the_training(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        (bad / name).write_bytes(b"not an idx file")
    common = ["-m", "gpucnn.train", "--distributed", "--epochs", "1", "--no-plots", "--device", "cpu"]
    rc, out, seconds = launch(2, mpmd=[(1, common + ["--out", str(tmp_path / "good")]),
                                       (1, common + ["--out", str(tmp_path / "bad-run"), "--dataset", "mnist",
                                                     "--data-dir", str(bad)])])
    # mpiexec's own "MPI_Abort(MPI_COMM_WORLD, 2)" line may or may not make it out before the
    # processes are killed (under load it often does not): the exit status and our lines do.
    assert rc != 0, out
    assert "gpucnn-train: error: " in out and "not an IDX file" in out, out
    assert "rank 1 of 2 failed: stopping every rank" in out, out
    assert not os.path.exists(tmp_path / "good" / "checkpoints"), out
    assert seconds < 30, out


def _gpus():
    import cupy
    return cupy.cuda.runtime.getDeviceCount()


@pytest.mark.gpu
@pytest.mark.parametrize("ranks", [1, 2])
def test_nccl_sums_cupy_buckets(ranks):
    if _gpus() < ranks:
        pytest.skip(f"needs {ranks} GPUs")
    rc, out, _ = scenario("nccl_sum", ranks, "cupy")
    assert rc == 0, out
    assert out.count("nccl sum ok") == ranks, out


@pytest.mark.parametrize("version", [13, 14])
def test_nccl_sums_buckets_on_a_standin_cupy(version):
    """The same ranks on tests/cupy_standin_nccl.py (CuPy 13's or 14's signatures): the NCCL id
    crosses processes, each rank joins on its own GPU, and the sums cross processes too."""
    rc, out, _ = scenario("nccl_sum", 2, f"standin{version}", env={"GPUCNN_CUDA_EMULATOR": "0"})
    assert rc == 0, out
    assert out.count("nccl sum ok") == 2, out


@pytest.mark.gpu
def test_train_through_nccl_on_one_rank_matches_plain_cuda(tmp_path):
    from gpucnn import train
    args = ["--epochs", "2", "--limit-train", "161", "--limit-test", "50", "--no-plots", "--device", "cuda"]
    plain, nccl = str(tmp_path / "plain"), str(tmp_path / "nccl")
    assert train.main(args + ["--out", plain]) == 0
    rc, out, _ = launch(1, "-m", "gpucnn.train", "--distributed", *args, "--out", nccl)
    assert rc == 0, out
    mine, reference = _weights(nccl), _weights(plain)
    for name in reference:  # g * n / n for a last batch of 1: equal but for rounding
        np.testing.assert_allclose(mine[name], reference[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_bench_reports_images_per_second_for_1_and_2_ranks(capsys):
    mpiexec_or_skip()
    from gpucnn.bench.__main__ import main
    assert main(["--distributed", "--ranks", "1,2", "--repeat", "1", "--warmup", "1", "--threads", "2"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1:3] for row in table[1:]] == [[" 1 x 2 ", " strong "], [" 2 x 1 ", " strong "],
                                                           [" 2 x 1 ", " weak "]], table
    assert all(float(row.split("|")[-2]) > 0 for row in table[1:]), table


# ---------------------------------------------------------------------------- inside the ranks


def _model_and_data(n=25, seed=3):
    from gpucnn import arch
    from gpucnn.nn.init import manual_seed
    manual_seed(seed)
    model = arch.build_model(arch.resolve(SPEC), (1, 8, 8), 5)
    data_rng = np.random.default_rng(seed)
    x = data_rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = data_rng.integers(0, 5, n)
    return model, x, y


def _train(model, x, y, batches_per_epoch, step_done):
    """Two epochs of SGD with momentum and weight decay over the given batches (index arrays per epoch)."""
    from gpucnn import nn, optim
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for epoch in range(2):
        for idx in batches_per_epoch(epoch):
            optimizer.zero_grad()
            if len(idx):
                criterion(model(x[idx]), y[idx])
                model.backward(criterion.backward())
            else:
                model.backward(None)
            optimizer.step()
            step_done()


def equivalence(overlap):
    """N ranks with local batch 4 against one process with batch 4N, 2 epochs of 3 full batches
    and one of 5 samples, which the ranks share unevenly (3+2 or 2+2+1): the average must
    weigh each rank's gradient by its samples. The buckets are small, so there are several,
    their sums started during backward ("overlap") or all after it ("after")."""
    from gpucnn import data, distributed
    world = distributed.init(timeout=60)
    local = 4
    n = 3 * local * world.size + 5

    model, x, y = _model_and_data(n)
    for p in model.parameters():  # ranks start apart: the wrapper must broadcast rank 0's weights
        p.data = p.data + world.rank
    ddp = distributed.DistributedDataParallel(model, world, bucket_cap_mb=0.0005)
    assert len(ddp.buckets) >= 3, ddp.buckets
    assert ddp.stages is not None  # a Sequential: backward layer by layer
    if overlap == "after":
        ddp.stages = None
    events = []  # the order of layers' backward and buckets' sums
    start = distributed.host.HostSum.start
    distributed.host.HostSum.start = lambda self, buf: events.append("sum") or start(self, buf)
    for layer in model:
        layer.backward = lambda dy, layer=layer: events.append("layer") or type(layer).backward(layer, dy)

    def same_weights_everywhere():
        mine = b"".join(p.data.tobytes() for p in model.parameters())
        assert all(w == mine for w in world.gather_bytes(mine)), "ranks' weights differ"
    orders = [np.random.default_rng(5) for _ in range(2)]
    _train(ddp, x, y, lambda e: distributed.local_batches(len(x), local, world.rank, world.size, orders[0]),
           same_weights_everywhere)
    first_step = events[:len(model) + len(ddp.buckets)]
    if overlap == "after":
        assert first_step[-len(ddp.buckets):] == ["sum"] * len(ddp.buckets), first_step
    else:  # the last layers' bucket is on its way before the first layer's backward
        last_layer = max(i for i, e in enumerate(first_step) if e == "layer")
        assert first_step.index("sum") < last_layer and first_step.count("sum") == len(ddp.buckets), first_step
    distributed.host.HostSum.start = start

    one, _, _ = _model_and_data(n)
    # One process: the same data, one batch of 4N per step. The weights agree to float32
    # rounding only: the N partial sums of a batch's gradient are added in another order
    # than one process adds its samples, and float addition is not associative.
    _train(one, x, y, lambda e: data.batch_indices(len(x), local * world.size, orders[1]), lambda: None)
    for (name, a), b in zip(one.named_parameters(), model.parameters()):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-4, atol=1e-6, err_msg=name)
    print(f"rank {world.rank}: equivalence ok", flush=True)


def emulator_arrays():
    """The CUDA emulator's device arrays go through the host (MPI) path and stay device arrays."""
    from gpucnn import cuda, distributed, nn
    world = distributed.init(timeout=60)
    params = [nn.Parameter(cuda.EmulatedDeviceArray(np.zeros(s, np.float32))) for s in [(3, 2), (5,)]]
    for i, p in enumerate(params):
        p.grad = cuda.EmulatedDeviceArray(np.full(p.data.shape, 10.0 * (world.rank + 1) + i, np.float32))
    bucket = distributed.buckets.make_buckets(params, world.size, 2 ** 20)
    summer = distributed.host.HostSum(world)
    for b in bucket:
        summer.start(b.pack(world.rank + 1))  # rank r has r + 1 samples
    summer.finish()
    for b in bucket:
        b.unpack()
    for i, p in enumerate(params):
        assert isinstance(p.grad, cuda.EmulatedDeviceArray), type(p.grad)
        # sum over r of (r+1) * (10 (r+1) + i) / sum of (r+1), with ranks 0, 1: (10+i + 2 (20+i)) / 3
        np.testing.assert_allclose(cuda.as_numpy(p.grad), (10 + i + 2 * (20 + i)) / 3, rtol=1e-6)
    print(f"rank {world.rank}: emulator arrays ok", flush=True)


def nccl_sum(cupy):
    """CuPy gradients through NCCL: rank r has r + 1 samples and gradient 10 (r + 1) + i.
    `cupy`: "cupy", or "standin13"/"standin14" for tests/cupy_standin_nccl.py with a GPU per rank."""
    from gpucnn import cuda, distributed, nn
    world = distributed.init(timeout=120)
    if cupy.startswith("standin"):
        import cupy_standin_nccl  # beside this file, on sys.path as the script's folder
        cupy_standin_nccl.StandIn(int(cupy[len("standin"):]), gpus=world.size).install()
    distributed.select_local_gpu(world)
    params = [nn.Parameter(cuda.to_device(np.zeros(s, np.float32), "cuda")) for s in [(3, 2), (5,)]]
    for i, p in enumerate(params):
        p.grad = cuda.to_device(np.full(p.data.shape, 10.0 * (world.rank + 1) + i, np.float32), "cuda")
    bucket = distributed.buckets.make_buckets(params, world.size, 2 ** 20)
    for b in bucket:
        world.nccl().start(b.pack(world.rank + 1))
    world.nccl().finish()
    for b in bucket:
        b.unpack()
    weights = np.arange(1, world.size + 1)
    for i, p in enumerate(params):
        assert cuda.device_of(p.grad) == "cuda"
        expected = (weights * (10.0 * weights + i)).sum() / weights.sum()
        np.testing.assert_allclose(cuda.as_numpy(p.grad), expected, rtol=1e-6)
    if cupy.startswith("standin"):
        world.barrier()  # rank 0's rendezvous folder goes with its process: the others are done with it
    print(f"rank {world.rank}: nccl sum ok", flush=True)


def nccl_init_hang():
    """Rank 1 never comes out of its NCCL init, so rank 0's never completes (stand-in CuPy 14)."""
    from gpucnn import distributed

    @distributed.abort_on_error
    def run():
        import cupy_standin_nccl
        world = distributed.init(timeout=60)
        standin = cupy_standin_nccl.StandIn(14, gpus=world.size)
        standin.install()
        distributed.select_local_gpu(world)
        world.watchdog.timeout = 2.0  # short only now: ranks may start seconds apart on a busy machine
        if world.rank == 1:
            standin.modules["cupy.cuda.nccl"].NcclCommunicator = lambda *args: time.sleep(60)
        world.nccl()
        print(f"rank {world.rank} finished", flush=True)
    run()


def _faulty_run(fault):
    from gpucnn import distributed

    @distributed.abort_on_error
    def run():
        world = distributed.init(timeout=60)
        model, x, y = _model_and_data()
        ddp = distributed.DistributedDataParallel(model, world)
        world.watchdog.timeout = 2.0  # short only now: ranks may start seconds apart on a busy machine
        steps = [0]

        def step_done():
            steps[0] += 1
            if world.rank == 1 and steps[0] == 2:
                fault()
        _train(ddp, x, y, lambda e: distributed.local_batches(len(x), 4, world.rank, world.size), step_done)
        print(f"rank {world.rank} finished", flush=True)
    run()


def raise_on_rank_1():
    def fault():
        raise ValueError("bad record on rank 1")
    _faulty_run(fault)


def hang_on_rank_1():
    _faulty_run(lambda: time.sleep(60))


def kill_rank_1():
    import signal
    _faulty_run(lambda: os.kill(os.getpid(), signal.SIGKILL))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
