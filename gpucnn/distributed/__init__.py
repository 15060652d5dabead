"""Data-parallel training across processes: MPI (mpi4py) starts and connects them; gradients
are summed with MPI on host arrays and with NCCL on CuPy arrays.

    mpiexec -n 2 python -m gpucnn.train --distributed

    world.py      init(): rank, size, barrier, broadcasts and sums, each with a deadline
    watchdog.py   the deadline, and the error naming a rank that hung or died
    faults.py     abort_on_error: one rank's exception stops every rank
    sampler.py    each global batch split across ranks, in order
    buckets.py    gradients in a few flat buffers, in a fixed order
    host.py       the sum of buffers over ranks with MPI (NumPy, emulator arrays)
    nccl.py       the same with NCCL (CuPy arrays)
    parallel.py   DistributedDataParallel, the module wrapper
    launch.py     the mpiexec that came with the MPICH wheel

mpi4py and MPICH come with the `mpi` extra: pip install -e ".[mpi]" in a clone of gpucnn.
"""
from .faults import abort_on_error
from .nccl import select_local_gpu
from .parallel import DistributedDataParallel, broadcast_state
from .sampler import local_batches, shard, shard_batches
from .watchdog import CollectiveTimeout
from .world import DistributedError, World, current, init

__all__ = ["abort_on_error", "select_local_gpu", "DistributedDataParallel", "broadcast_state", "local_batches", "shard", "shard_batches",
           "CollectiveTimeout", "DistributedError", "World", "current", "init"]
