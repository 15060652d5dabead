"""Mini-batch indices, shuffled by a numpy Generator so that a resumed run, its state
restored, draws the same order as one never stopped."""
import numpy as np


def batch_indices(n, batch_size, rng=None):
    """Index arrays covering range(n) in batches; a fresh permutation from rng, or in order."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, but got {batch_size}")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
