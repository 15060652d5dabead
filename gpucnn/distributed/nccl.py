"""Summing buckets over ranks with NCCL, for CuPy arrays: one GPU per process.

Rank 0 makes the NCCL id and MPI broadcasts it; each process then joins the NCCL
communicator on its node-local GPU. As on the host (host.py), a bucket is summed by a
reduce-scatter and an all-gather, so every rank gets the same bits. They run on a stream
of their own, after the gradients' kernels (an event orders them), so that a bucket's sum
overlaps the rest of backward. The wait polls a CUDA event under the same deadline as the
MPI collectives and aborts the NCCL communicator past it, so a missing rank is an error,
not a GPU spinning forever.

Written against cupy.cuda.nccl's documented API; not run on CI (it has no GPU).
"""
import numpy as np

from .. import cuda

NCCL_ID_BYTES = 128


def select_local_gpu(world):
    """Make this process's GPU current: ranks on one node take GPUs 0, 1, ... in turn. Called
    before the model moves to "cuda"; nothing to do on the CUDA emulator."""
    if cuda.emulator_enabled():
        return
    cp = cuda.cupy_if_loaded()  # check_device("cuda") imported it
    node = world.comm.Split_type(world.MPI.COMM_TYPE_SHARED)
    cp.cuda.Device(node.Get_rank() % cp.cuda.runtime.getDeviceCount()).use()


class NcclGroup:
    def __init__(self, world):
        from cupy.cuda import nccl  # CuPy's NCCL binding: the NCCL wheel the cuda12/cuda13 extras pull in
        self.nccl, self.world = nccl, world
        self.cupy = cuda.cupy_if_loaded()
        uid = np.zeros(NCCL_ID_BYTES, np.int64)
        if world.is_root:
            uid[:] = nccl.get_unique_id()
        world.broadcast(uid, "broadcast of the NCCL id")
        self.comm = nccl.NcclCommunicator(world.size, tuple(int(v) for v in uid), world.rank)
        self.dtypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        self.stream = self.cupy.cuda.Stream(non_blocking=True)
        self.chunks = []  # alive until finish: the NCCL stream still writes them

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
