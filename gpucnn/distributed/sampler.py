"""Splitting each global batch across ranks, so that N ranks see exactly the samples, in the
same order, that one process with the whole batch sees.

Every rank draws the same global order (the same seeded generator), then keeps its own
contiguous slice of each batch: rank 0 the first part, rank 1 the next, and so on.
"""
import numpy as np

from ..data import batch_indices


def shard(batch, rank, world_size):
    """Rank `rank`'s part of one global batch: the parts are as equal as can be (sizes differ
    by at most one) and, in rank order, concatenate to the batch. A part can be empty only
    when the batch has fewer samples than there are ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard: rank must be in [0, {world_size}), but got {rank}")
    return np.array_split(np.asarray(batch), world_size)[rank]


def shard_batches(batches, rank, world_size):
    """This rank's part of each global batch, in order."""
    return [shard(b, rank, world_size) for b in batches]


def local_batches(n, batch_size, rank, world_size, rng=None):
    """Index arrays for rank `rank` when each of `world_size` ranks takes `batch_size` samples
    a step: the global batches of one process with batch_size * world_size, split."""
    return shard_batches(batch_indices(n, batch_size * world_size, rng), rank, world_size)
