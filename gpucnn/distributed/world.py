"""The group of processes: started by mpiexec, connected by MPI through mpi4py.

mpi4py and the MPICH wheel are the `mpi` extra (`pip install -e ".[mpi]"` in a clone of gpucnn); they are
imported here only, and only when a distributed run starts.
"""
import importlib.util
import os
import sys
import time

import numpy as np

from .watchdog import Watchdog

INSTALL_HINT = 'install the `mpi` extra: pip install -e ".[mpi]" in a clone of gpucnn (it brings mpi4py and the MPICH wheel with its mpiexec)'
LAUNCH_HINT = "start every process with mpiexec, e.g. mpiexec -n 2 python -m gpucnn.train --distributed"
# What the common launchers put in each process's environment: MPICH/Intel MPI's Hydra
# (PMI_*), Open MPI (OMPI_*), PMIx-based launchers and Slurm's srun (PMIX_*).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
# How many processes the launcher says it started (Hydra, Open MPI).
LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
DEFAULT_TIMEOUT = 600.0
# Seconds a failed rank waits, its error printed, before it aborts the job (World.abort).
ABORT_GRACE = 1.0

_world = None


class DistributedError(RuntimeError):
    """A distributed run that cannot start, or a collective that failed."""


def _import_mpi():
    """mpi4py's MPI module, which initializes MPI; a clear error when the extra is missing."""
    if importlib.util.find_spec("mpi4py") is None:
        raise DistributedError(f"distributed training needs mpi4py, which is not installed: {INSTALL_HINT}")
    if not any(v in os.environ for v in LAUNCHER_VARIABLES):
        raise DistributedError(f"this process was not started by mpiexec (none of {', '.join(LAUNCHER_VARIABLES)} "
                               f"is set): {LAUNCH_HINT}")
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:  # mpi4py without an MPI library it can load
        raise DistributedError(f"mpi4py cannot load an MPI library ({e}): {INSTALL_HINT}") from None
    return MPI


class World:
    """This process's place among `size` ranks, and the collectives gpucnn needs.

    Every collective is nonblocking and waited for with a deadline (`timeout` seconds), so
    that a rank that hangs or vanishes turns into an error naming it, never a hang.
    """

    def __init__(self, MPI, comm, timeout=DEFAULT_TIMEOUT):
        if not timeout > 0:
            raise ValueError(f"distributed timeout must be positive, but got {timeout}")
        self.MPI = MPI
        self.comm = comm.Dup()  # gpucnn's traffic never mixes with the user's on COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.watchdog = Watchdog(MPI, self.comm, timeout)
        self._nccl = None

    @property
    def is_root(self):
        return self.rank == 0

    def wait(self, request, what):
        self.watchdog.wait(request, what)

    def barrier(self):
        self.wait(self.comm.Ibarrier(), "barrier")

    def broadcast(self, array, what="broadcast"):
        """Rank 0's values into `array` (a contiguous host array) on every rank, in place."""
        self.wait(self.comm.Ibcast(array, root=0), what)

    def sum(self, *numbers):
        """The sums over all ranks of a few numbers (float64), the same on every rank."""
        return self._reduce(numbers, self.MPI.SUM, "sum")

    def max(self, *numbers):
        """The largest value over all ranks of each of a few numbers."""
        return self._reduce(numbers, self.MPI.MAX, "maximum")

    def _reduce(self, numbers, op, what):
        local = np.array(numbers, dtype=np.float64)
        total = np.empty_like(local)
        self.wait(self.comm.Iallreduce(local, total, op=op), f"{what} of {len(numbers)} numbers")
        return tuple(float(v) for v in total)

    def gather_bytes(self, data):
        """Every rank's `data` (bytes), in rank order, on every rank: small things only (checks, ids)."""
        lengths = np.empty(self.size, np.int64)
        self.wait(self.comm.Iallgather(np.array([len(data)], np.int64), lengths), "gather of lengths")
        out = np.empty(int(lengths.sum()), np.uint8)
        counts, displs = lengths, np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.wait(self.comm.Iallgatherv(np.frombuffer(data, np.uint8), [out, counts, displs, self.MPI.BYTE]),
                  "gather of bytes")
        return [out[a:a + n].tobytes() for a, n in zip(displs, counts)]

    def nccl(self):
        """The NCCL communicator over the same ranks, made on first use (CuPy arrays only)."""
        if self._nccl is None:
            from .nccl import NcclGroup
            self._nccl = NcclGroup(self)
        return self._nccl

    def abort(self, code=1):
        """End every rank's process now: what a failed rank does so that no other waits for it.

        mpiexec passes a rank's output on through a pipe that it stops reading once the job is
        aborted, so the lines a rank prints just before MPI_Abort can be lost (other projects
        have met it too, e.g. chapel-lang/chapel#14464); on a loaded 2-core VM the error of
        the failed rank went missing once in three runs. ABORT_GRACE seconds between the last
        line and the abort let mpiexec pass it on.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE)
        self.MPI.COMM_WORLD.Abort(code)

    def silence_stdout_unless_root(self):
        """Ranks other than 0 print nothing to stdout (their errors still reach stderr)."""
        if not self.is_root:
            sys.stdout = open(os.devnull, "w")


def check_size(size):
    """A clear error when MPI sees another number of processes than the launcher started: an
    mpiexec of another MPI than mpi4py's leaves each process alone in a world of 1, and the
    "distributed" run would train N unrelated models."""
    for name in LAUNCHER_SIZES:
        started = os.environ.get(name)
        if started is not None and started.isdigit() and int(started) != size:
            raise DistributedError(f"the launcher started {started} processes ({name}), but MPI sees {size}: "
                                   f"mpiexec and mpi4py use different MPI libraries; start with the mpiexec "
                                   f"next to this Python ({os.path.dirname(sys.executable)}), {INSTALL_HINT}")


def init(timeout=DEFAULT_TIMEOUT):
    """The World of this process (made once), with MPI initialized through mpi4py."""
    global _world
    if _world is None:
        MPI = _import_mpi()
        check_size(MPI.COMM_WORLD.Get_size())
        _world = World(MPI, MPI.COMM_WORLD, timeout)
    return _world


def current():
    """The World made by `init`, or None in a plain single-process run."""
    return _world
