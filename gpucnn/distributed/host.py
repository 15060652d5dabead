"""Summing buckets over ranks with MPI, for arrays in host memory (NumPy, and the CUDA
emulator's device arrays, which are NumPy memory too).

Not MPI_Allreduce: the MPI standard does not promise that every rank gets the same bits
from it (an implementation may add in a different order on different ranks). A
reduce-scatter followed by an all-gather (the ring all-reduce's two halves) sums each
chunk on one rank only and copies it to the others, so every rank ends bit-identical.
"""
import numpy as np


class HostSum:
    def __init__(self, world):
        self.world = world

    def __call__(self, buffers):
        """Sum each buffer over all ranks, in place, in list order (the same order on every rank)."""
        world, SUM = self.world, self.world.MPI.SUM
        started = []
        for i, buf in enumerate(buffers):
            chunk = np.empty(len(buf) // world.size, buf.dtype)
            started.append((i, buf, chunk, world.comm.Ireduce_scatter_block(buf, chunk, op=SUM)))
        gathers = []
        for i, buf, chunk, request in started:
            world.wait(request, f"gradient bucket {i}: reduce-scatter")
            gathers.append((i, chunk, world.comm.Iallgather(chunk, buf)))
        for i, chunk, request in gathers:
            world.wait(request, f"gradient bucket {i}: all-gather")
