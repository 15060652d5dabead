"""Summing buckets over ranks with MPI, for arrays in host memory (NumPy, and the CUDA
emulator's device arrays, which are NumPy memory too).

Not MPI_Allreduce: the MPI standard does not promise that every rank gets the same bits
from it (an implementation may add in a different order on different ranks). A
reduce-scatter followed by an all-gather (the ring all-reduce's two halves) sums each
chunk on one rank only and copies it to the others, so every rank ends bit-identical.
"""
import numpy as np

from .. import cuda


class HostSum:
    def __init__(self, world):
        self.world = world
        self.pending = []

    def start(self, buf):
        """Begin summing one bucket over all ranks, in place (every rank starts its buckets in the same order)."""
        buf = cuda.as_numpy(buf)  # an emulated device array's memory itself, so the sum lands in it
        chunk = np.empty(len(buf) // self.world.size, buf.dtype)
        request = self.world.comm.Ireduce_scatter_block(buf, chunk, op=self.world.MPI.SUM)
        self.pending.append((len(self.pending), buf, chunk, request))

    def progress(self):
        """Let MPI move the started sums along (it does so only inside MPI calls)."""
        for _, _, _, request in self.pending:
            request.Test()

    def finish(self):
        """Wait for every started sum."""
        gathers = []
        for i, buf, chunk, request in self.pending:
            self.world.wait(request, f"gradient bucket {i}: reduce-scatter")
            gathers.append((i, chunk, self.world.comm.Iallgather(chunk, buf)))
        for i, chunk, request in gathers:
            self.world.wait(request, f"gradient bucket {i}: all-gather")
        self.pending = []
