"""gpucnn.distributed's GPU path (nccl.py) on tests/cupy_standin_nccl.py, a stand-in for CuPy
13 and 14 and NCCL: no GPU needed. Ranks are threads of this process, with a World's
collectives between them and a real Watchdog (the runs as mpiexec processes are in
test_distributed_mpi.py)."""
import sys
import threading
import time
import types

import numpy as np
import pytest

import cupy_standin_nccl
from gpucnn import cuda, distributed, nn
from gpucnn.distributed import buckets
from gpucnn.distributed.nccl import NcclGroup, select_local_gpu
from gpucnn.distributed.watchdog import Watchdog


@pytest.fixture
def standin(monkeypatch):
    """make(version, **options): a stand-in CuPy that `import cupy` finds during this test; not imported yet."""
    made = []
    saved = {name: sys.modules.pop(name) for name in cupy_standin_nccl.NAMES if name in sys.modules}
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)
    monkeypatch.setattr(cuda, "_cupy", None)
    monkeypatch.setattr(cuda, "_cupy_error", None)

    def make(version, **options):
        s = cupy_standin_nccl.StandIn(version, **options)
        monkeypatch.setattr(sys, "meta_path", [s.finder] + sys.meta_path)
        made.append(s)
        return s
    yield make
    for s in made:
        s.cleanup()  # ends any thread still waiting in a rendezvous
    for name in cupy_standin_nccl.NAMES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


class _SilentComm:
    """What a Watchdog needs of an MPI communicator; no other rank's "alive" note ever arrives."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Dup(self):
        return self

    def isend(self, *args, **kwargs):
        return None

    def iprobe(self, **kwargs):
        return False


class ThreadWorld:
    """A World's interface for rank `rank` of `size`: the collectives meet the other ranks'
    threads, or, with `others`, return those entries as the other ranks' (ranks that took part
    in MPI but may never come to NCCL)."""

    def __init__(self, rank, size, host="node0", timeout=20.0, shared=None, others=None):
        self.rank, self.size, self.is_root = rank, size, rank == 0
        self.shared, self.others = shared, others
        self.MPI = types.SimpleNamespace(ANY_SOURCE=-1, Status=lambda: None, Get_processor_name=lambda: host)
        self.watchdog = Watchdog(self.MPI, _SilentComm(rank, size), timeout)
        self._nccl = None

    nccl = distributed.World.nccl

    def gather_bytes(self, data):
        if self.shared is None:
            return [data] + (self.others or [data] * (self.size - 1))
        slots, barrier = self.shared["slots"], self.shared["barrier"]
        slots[self.rank] = data
        barrier.wait()
        out = list(slots)
        barrier.wait()
        return out

    def broadcast(self, array, what="broadcast"):
        root = self.gather_bytes(array.tobytes())[0]
        array[...] = np.frombuffer(root, array.dtype).reshape(array.shape)

    def silence_stdout_unless_root(self):
        assert self.is_root


def on_ranks(size, work, hosts=None):
    """work(world) on `size` ranks, each a thread; their results in rank order (the first error is raised)."""
    shared = {"slots": [None] * size, "barrier": threading.Barrier(size, timeout=30)}
    worlds = [ThreadWorld(r, size, (hosts or ["node0"] * size)[r], shared=shared) for r in range(size)]
    results, errors = [None] * size, [None] * size

    def run(r):
        try:
            results[r] = work(worlds[r])
        except BaseException as e:
            errors[r] = e
    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in errors:
        if e is not None:
            raise e
    return results


def sum_buckets(world):
    """Rank r has r + 1 samples and gradients 10 (r + 1) + i, on its GPU, summed through NCCL."""
    select_local_gpu(world)
    params = [nn.Parameter(cuda.to_device(np.zeros(s, np.float32), "cuda")) for s in [(3, 2), (5,)]]
    for i, p in enumerate(params):
        p.grad = cuda.to_device(np.full(p.data.shape, 10.0 * (world.rank + 1) + i, np.float32), "cuda")
    group = NcclGroup(world)
    bucket = buckets.make_buckets(params, world.size, 2 ** 20)
    for b in bucket:
        group.start(b.pack(world.rank + 1))
    group.finish()
    for b in bucket:
        b.unpack()
    return group, params


@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.parametrize("version, signed_char", [(13, True), (13, False), (14, True)],
                         ids=["cupy13-signed-char", "cupy13-unsigned-char", "cupy14"])
def test_buckets_are_summed_over_ranks_through_nccl(standin, version, signed_char, ranks):
    s = standin(version, gpus=ranks, signed_char=signed_char)
    results = on_ranks(ranks, sum_buckets)
    weights = np.arange(1, ranks + 1)
    ids = set()
    for rank, (group, params) in enumerate(results):
        assert group.comm.device_id() == rank  # joined on its own GPU, not the joining thread's default
        assert type(group.comm.comm_id) is (bytes if version >= 14 else tuple)
        ids.add(group.comm.comm_id)
        assert group.chunks == []
        for i, p in enumerate(params):
            assert isinstance(p.grad, s.modules["cupy"].ndarray)
            expected = (weights * (10.0 * weights + i)).sum() / weights.sum()
            np.testing.assert_allclose(cuda.as_numpy(p.grad), expected, rtol=1e-6)
    assert len(ids) == 1  # every rank got rank 0's id


def test_select_local_gpu_imports_cupy_itself_and_counts_gpus_per_node(standin):
    s = standin(14, gpus=2)
    assert "cupy" not in sys.modules

    def select(world):
        select_local_gpu(world)
        return s.modules["cupy.cuda.runtime"].getDevice()
    assert on_ranks(3, select, hosts=["a", "b", "b"]) == [0, 0, 1]
    assert sys.modules["cupy"] is s.modules["cupy"]


def test_more_ranks_than_gpus_on_a_node_is_refused_before_nccl(standin, monkeypatch, capsys, tmp_path):
    from gpucnn import train
    standin(13, gpus=2)
    monkeypatch.setattr(distributed, "init", lambda timeout: ThreadWorld(0, 3))
    with pytest.raises(SystemExit) as e:
        train.main(["--distributed", "--device", "cuda", "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == ("gpucnn-train: error: 3 ranks (0, 1, 2) run on node node0, which has 2 GPUs: NCCL needs a GPU "
                   "of its own for every rank; start at most 2 ranks per node\n"), err


def test_without_nccl_the_error_names_the_extra(standin):
    standin(14, nccl=False)
    with pytest.raises(distributed.DistributedError) as e:
        NcclGroup(ThreadWorld(0, 1))
    message = str(e.value)
    assert message.startswith("CuPy 14.2.0 found no NCCL library: install NCCL with the GPU extra: "
                              'pip install -e ".[cuda12]" (or ".[cuda13]")'), message
    assert "\n" not in message


def test_a_rank_that_never_joins_nccl_is_named_after_the_deadline(standin):
    standin(14)
    world = ThreadWorld(0, 2, timeout=0.5, others=None)  # rank 1 took part in MPI, never comes to NCCL
    t0 = time.monotonic()
    with pytest.raises(distributed.CollectiveTimeout, match=r"^rank 0: NCCL init \(every rank joins the communicator\) "
                       r"did not complete within 0.5 s: no word from rank 1 \(hung or dead\); NCCL_DEBUG=INFO"):
        NcclGroup(world)
    assert time.monotonic() - t0 < 5


def test_a_rank_that_never_sums_aborts_the_others_communicator(standin):
    standin(14, gpus=2)

    def work(world):
        select_local_gpu(world)
        group = NcclGroup(world)
        world.watchdog.timeout = 0.5  # short only now: both ranks have joined
        if world.rank == 0:
            group.start(cuda.to_device(np.ones(4, np.float32), "cuda"))
            with pytest.raises(distributed.CollectiveTimeout,
                               match="rank 0: NCCL gradient all-reduce did not complete within 0.5 s: no word from rank 1"):
                group.finish()
        return group
    group, _ = on_ranks(2, work)
    assert group.comm.aborted


def test_ranks_with_different_cupy_versions_are_refused(standin):
    standin(14)
    with pytest.raises(distributed.DistributedError, match=r"the ranks run different CuPy versions \(rank 0: 14\.2\.0, "
                                                           r"rank 1: 13\.6\.0\): NCCL needs the same CuPy on every rank"):
        NcclGroup(ThreadWorld(0, 2, others=[b"13.6.0"]))


def test_an_nccl_init_error_names_the_rank_and_gpu(standin):
    standin(13, gpus=2)

    def work(world):  # both ranks on GPU 0, as without select_local_gpu
        with pytest.raises(distributed.DistributedError, match=f"rank {world.rank}: NCCL init on GPU 0 failed: "
                                                               "NcclError: invalid usage"):
            NcclGroup(world)
    on_ranks(2, work)


@pytest.mark.parametrize("version", [13, 14])
def test_the_standin_takes_only_its_versions_id_type(standin, version):
    """As the cupy-cuda12x 13.6.0 and 14.2.0 wheels do (their checks come before any GPU call)."""
    s = standin(version)
    from cupy.cuda import nccl
    uid = nccl.get_unique_id()
    assert type(uid) is (bytes if version >= 14 else tuple) and len(uid) == 128
    other = tuple(uid) if version >= 14 else bytes(v & 0xFF for v in uid)
    wrong = "tuple" if version >= 14 else "bytes"
    with pytest.raises(TypeError, match=f"Argument 'commId' has incorrect type .expected {type(uid).__name__}, got {wrong}."):
        nccl.NcclCommunicator(1, other, 0)
    with pytest.raises(AssertionError if version == 13 else ValueError):
        nccl.NcclCommunicator(1, uid[:12], 0)
    if version == 13:
        with pytest.raises(OverflowError, match="value too large to convert to char"):
            nccl.NcclCommunicator(1, (200,) + uid[1:], 0)
    assert nccl.NcclCommunicator(1, uid, 0).device_id() == 0
    assert s.communicators[0].comm_id == uid


def test_data_parallel_sums_cupy_gradients_through_nccl(standin):
    standin(14, gpus=2)

    def work(world):
        select_local_gpu(world)
        model = nn.Linear(3, 2).to("cuda")
        ddp = distributed.DistributedDataParallel(model, world)
        for p in model.parameters():
            p.grad = cuda.to_device(np.full(p.data.shape, world.rank + 1.0, np.float32), "cuda")
        ddp.reduce_gradients(samples=world.rank + 1)
        return type(ddp._summer), [cuda.as_numpy(p.grad) for p in model.parameters()]
    for summer, grads in on_ranks(2, work):
        assert summer is NcclGroup
        for g in grads:  # (1 * 1 + 2 * 2) / 3
            np.testing.assert_allclose(g, 5 / 3, rtol=1e-6)
