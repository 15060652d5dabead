"""gpucnn.distributed without MPI processes: the batch split, the bucket layout and the
errors for a run that cannot start (the MPI runs are in test_distributed_mpi.py, the NCCL
path on a stand-in CuPy in test_distributed_nccl.py)."""
import builtins
import importlib.util

import numpy as np
import pytest

from gpucnn import data, distributed, nn
from gpucnn.distributed import buckets, world


@pytest.mark.parametrize("n, local, ranks", [(25, 4, 2), (25, 4, 3), (7, 2, 4), (32, 8, 1)])
def test_ranks_together_see_one_process_batches_in_order(n, local, ranks):
    orders = [np.random.default_rng(0) for _ in range(ranks + 1)]
    parts = [distributed.local_batches(n, local, r, ranks, orders[r]) for r in range(ranks)]
    whole = data.batch_indices(n, local * ranks, orders[-1])
    assert all(len(p) == len(whole) for p in parts)
    for step, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[step] for p in parts]), batch)
        sizes = [len(p[step]) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        if len(batch) == local * ranks:
            assert sizes == [local] * ranks


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match=r"shard: rank must be in \[0, 2\), but got 2"):
        distributed.shard(np.arange(4), 2, 2)


def test_buckets_reverse_parameter_order_under_the_cap_and_split_by_dtype():
    ps = [nn.Parameter(np.zeros(n, dt)) for n, dt in [(100, np.float32), (50, np.float32), (30, np.float32),
                                                      (10, np.float64), (10, np.float64)]]
    got = buckets.make_buckets(ps, world_size=3, cap_bytes=400)
    assert [[ps.index(p) for p in b.params] for b in got] == [[4, 3], [2, 1], [0]]
    for b in got:  # gradients, a sample count, one flag per parameter, padded for reduce-scatter
        assert b.size % 3 == 0 and b.size >= sum(p.data.size for p in b.params) + 1 + len(b.params)


def test_a_bucket_packs_weighted_gradients_and_averages_back():
    ps = [nn.Parameter(np.zeros((2, 3), np.float32)), nn.Parameter(np.zeros(4, np.float32))]
    ps[0].grad = np.arange(6, dtype=np.float32).reshape(2, 3)
    (b,) = buckets.make_buckets(ps, world_size=2, cap_bytes=2 ** 20)
    assert b.params == ps[::-1]  # reverse order: the last layer's gradient is ready first
    buf = b.pack(samples=4)
    at = b.offsets[1]
    np.testing.assert_array_equal(buf[at:at + 6], 4 * np.arange(6))
    assert buf[b.count_at:b.count_at + 3].tolist() == [4, 0, 1]
    buf += b.pack(samples=4).copy()  # as if a second rank had the same gradients
    b.unpack()
    np.testing.assert_array_equal(ps[0].grad, np.arange(6).reshape(2, 3))
    assert ps[1].grad is None  # no rank used it: as in one process, it gets no gradient
    assert not np.shares_memory(ps[0].grad, b.buffer)


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a))
    with pytest.raises(distributed.DistributedError, match=r'pip install -e "\.\[mpi\]"'):
        world._import_mpi()


def test_outside_mpiexec_the_error_says_how_to_start(monkeypatch):
    pytest.importorskip("mpi4py")
    for name in world.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    imported = []
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: imported.append(name) or real_import(name, *a, **k))
    with pytest.raises(distributed.DistributedError, match="not started by mpiexec.*mpiexec -n 2 python -m gpucnn.train --distributed"):
        world._import_mpi()
    assert "mpi4py" not in imported  # MPI is not initialized on the way to the error


def test_a_launcher_of_another_mpi_is_caught(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    monkeypatch.setenv("PMI_SIZE", "4")
    world.check_size(4)
    with pytest.raises(distributed.DistributedError, match="started 4 processes .PMI_SIZE., but MPI sees 1: "
                                                           "mpiexec and mpi4py use different MPI libraries"):
        world.check_size(1)


def test_train_distributed_outside_mpiexec_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    from gpucnn import train
    for name in world.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as e:
        train.main(["--distributed", "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucnn-train: error: ") and "mpiexec" in err and err.count("\n") == 1, err


def test_scaling_model_counts_and_ring_formula():
    from gpucnn.bench import scaling
    lenet, vgg, resnet = scaling.nets()
    assert lenet["params"] == 61_706  # LeNet-5 with 5x5 convolutions on 28x28
    assert round(resnet["params"], -4) == 270_000  # He et al. 2016, Table 6: 0.27M
    assert round(resnet["forward_flops"] / 2, -5) == 40_600_000  # 40.6M multiply-adds per 32x32 image
    # DESIGN-NOTES 4.6's worked example: 25M fp32 parameters on 8 GPUs at 450 GB/s, ~0.39 ms.
    net = {"params": 25_000_000}
    bandwidth_only = scaling.allreduce_seconds(net, 8) - 2 * 7 * scaling.NVLINK[2]
    assert abs(bandwidth_only * scaling.NVLINK[1] / 450e9 - 0.39e-3) < 0.005e-3
    assert scaling.allreduce_seconds(net, 1) == 0


def test_train_distributed_timeout_must_be_positive(capsys):
    from gpucnn import train
    with pytest.raises(SystemExit) as e:
        train.main(["--distributed", "--distributed-timeout", "0"])
    assert e.value.code == 2
    assert "gpucnn-train: error: --distributed-timeout must be positive, but got 0.0" in capsys.readouterr().err
