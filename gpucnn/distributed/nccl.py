"""Summing buckets over ranks with NCCL, for CuPy arrays: one GPU per process.

Rank 0 makes the NCCL id and MPI broadcasts it; each process then joins the NCCL
communicator on its node-local GPU. As on the host (host.py), a bucket is summed by a
reduce-scatter and an all-gather, so every rank gets the same bits. They run on a stream
of their own, after the gradients' kernels (an event orders them), so that a bucket's sum
overlaps the rest of backward. The wait polls a CUDA event under the same deadline as the
MPI collectives and aborts the NCCL communicator past it, so a missing rank is an error,
not a GPU spinning forever.

The id's type depends on CuPy's version (cupy_backends/cuda/libs/nccl.pyx): since CuPy 14,
`nccl.get_unique_id()` returns 128 bytes and `NcclCommunicator(ndev, commId, rank)` takes
bytes; CuPy 13 uses a tuple of 128 ints, the id's C chars (signed or not, as the
platform's char). So rank 0's id travels as its 128 values with a tag for its type, and
every rank, once it is known to run the same CuPy, rebuilds exactly what rank 0 got.

Joining blocks in ncclCommInitRank until every rank has joined, so it runs on a thread of
its own, waited for under the deadline: a rank that never joins is named, as in any other
collective. The thread takes the caller's GPU first (CUDA's current device is per thread,
and NCCL joins on the current one).

CI runs these paths on every run against tests/cupy_standin_nccl.py, a stand-in for CuPy
that follows the signatures of CuPy 13 and 14; on a GPU, the gpu tests of
test_distributed_mpi.py run them on the real CuPy and NCCL.
"""
import threading

import numpy as np

from .. import cuda
from .watchdog import CollectiveTimeout
from .world import DistributedError

NCCL_ID_BYTES = 128
NCCL_HINT = ('install NCCL with the GPU extra: pip install -e ".[cuda12]" (or ".[cuda13]") in a clone of gpucnn, '
             'or pip install nvidia-nccl-cu12 (or nvidia-nccl-cu13) beside CuPy')


def _cupy():
    """CuPy, imported now if nothing has yet; check_device's one-line error when it cannot run."""
    cuda.check_device("cuda")
    return cuda.cupy_if_loaded()


def select_local_gpu(world):
    """Make this process's GPU current: the ranks on one node take GPUs 0, 1, ... in rank order.

    Called before the model moves to "cuda"; nothing to do on the CUDA emulator. A node with
    more ranks than GPUs is an error here, on every rank: NCCL refuses two ranks on one GPU,
    and its own error does not say why.
    """
    if cuda.emulator_enabled():
        return
    cp = _cupy()
    here = world.MPI.Get_processor_name()
    me = f"{here}\n{cp.cuda.runtime.getDeviceCount()}"
    nodes = {}
    for rank, entry in enumerate(world.gather_bytes(me.encode())):
        host, gpus = entry.decode().split("\n")
        nodes.setdefault(host, (int(gpus), []))[1].append(rank)
    for host, (gpus, ranks) in nodes.items():
        if len(ranks) > gpus:
            raise DistributedError(
                f"{len(ranks)} ranks ({', '.join(map(str, ranks))}) run on node {host}, which has {gpus} "
                f"GPU{'s' if gpus != 1 else ''}: NCCL needs a GPU of its own for every rank; start at most "
                f"{gpus} rank{'s' if gpus != 1 else ''} per node")
    cp.cuda.Device(nodes[here][1].index(world.rank)).use()


class NcclGroup:
    def __init__(self, world):
        self.cupy, self.world = _cupy(), world
        from cupy.cuda import nccl  # without libnccl CuPy still imports it, with available False
        if not nccl.available:
            raise DistributedError(f"CuPy {self.cupy.__version__} found no NCCL library: {NCCL_HINT}")
        self.nccl = nccl
        self.comm = self._join(self._exchange_id())
        self.dtypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        self.stream = self.cupy.cuda.Stream(non_blocking=True)
        self.chunks = []  # alive until finish: the NCCL stream still writes them

    def _exchange_id(self):
        """Rank 0's NCCL id on every rank, of the type this CuPy's NcclCommunicator takes."""
        versions = [v.decode() for v in self.world.gather_bytes(self.cupy.__version__.encode())]
        others = [f"rank {r}: {v}" for r, v in enumerate(versions) if v != versions[0]]
        if others:
            raise DistributedError(f"the ranks run different CuPy versions (rank 0: {versions[0]}, "
                                   f"{', '.join(others)}): NCCL needs the same CuPy on every rank")
        message = np.zeros(1 + NCCL_ID_BYTES, np.int16)  # [1 if bytes else 0, the 128 values]
        if self.world.is_root:
            uid = self.nccl.get_unique_id()
            message[0] = isinstance(uid, bytes)
            message[1:] = np.frombuffer(uid, np.uint8) if isinstance(uid, bytes) else uid
        self.world.broadcast(message, "broadcast of the NCCL id")
        values = message[1:]
        return values.astype(np.uint8).tobytes() if message[0] else tuple(int(v) for v in values)

    def _join(self, uid):
        """This rank's NcclCommunicator, made on a thread and waited for under the deadline."""
        device = self.cupy.cuda.runtime.getDevice()
        joined = {}

        def join():
            try:
                self.cupy.cuda.Device(device).use()
                joined["comm"] = self.nccl.NcclCommunicator(self.world.size, uid, self.world.rank)
            except Exception as e:
                joined["error"] = e
        # A daemon: past the deadline it stays blocked in NCCL until the process ends, which
        # the error raised here brings about (abort_on_error).
        thread = threading.Thread(target=join, name="gpucnn NCCL init", daemon=True)
        thread.start()
        try:
            self.world.watchdog.poll(lambda: not thread.is_alive(), "NCCL init (every rank joins the communicator)")
        except CollectiveTimeout as e:
            raise CollectiveTimeout(f"{e}; NCCL_DEBUG=INFO shows what NCCL waits for") from None
        if "error" in joined:
            e = joined["error"]
            raise DistributedError(f"rank {self.world.rank}: NCCL init on GPU {device} failed: "
                                   f"{type(e).__name__}: {e}") from e
        return joined["comm"]

    def start(self, buf):
        """Enqueue the sum of one CuPy bucket over all ranks, in place, after the kernels queued so far."""
        cp, n = self.cupy, len(buf) // self.world.size
        self.stream.wait_event(cp.cuda.get_current_stream().record())
        chunk = cp.empty(n, buf.dtype)
        kind, ptr = self.dtypes[buf.dtype], self.stream.ptr
        self.comm.reduceScatter(buf.data.ptr, chunk.data.ptr, n, kind, self.nccl.NCCL_SUM, ptr)
        self.comm.allGather(chunk.data.ptr, buf.data.ptr, n, kind, ptr)
        self.chunks.append(chunk)

    def progress(self):
        """Nothing to do: NCCL runs on its own."""

    def finish(self):
        """Wait, under the deadline, for every enqueued sum."""
        done = self.stream.record()

        def finished():
            self.comm.check_async_error()
            return done.done
        try:
            self.world.watchdog.poll(finished, "NCCL gradient all-reduce")
        except Exception:
            self.comm.abort()
            raise
        self.chunks = []
