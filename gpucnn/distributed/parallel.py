"""DistributedDataParallel: one model per rank, the same weights everywhere, gradients averaged.

As torch.nn.parallel.DistributedDataParallel: wrapping broadcasts rank 0's weights (and
anything else in the state_dict, such as BatchNorm's running statistics) to every rank;
after each backward the gradients are summed over ranks in fixed buckets and averaged, so
that the same optimizer step on every rank keeps the weights bit-identical. BatchNorm's
batch statistics stay per rank, as DDP's default.

Unlike PyTorch's, the average is weighted by each rank's number of samples (the loss must
be a mean over the batch, as CrossEntropyLoss and MSELoss are): N ranks then step exactly
as one process with the whole global batch, also when a last batch splits unevenly. The
all-reduce runs after the whole backward (no overlap with it: gpucnn's backward has no
per-layer hooks yet).
"""
import json

import numpy as np

from ..nn import Module
from .buckets import make_buckets
from .host import HostSum
from .world import DistributedError, init

DEFAULT_BUCKET_CAP_MB = 25  # PyTorch DDP's default


def broadcast_state(world, module):
    """Rank 0's state_dict into `module` on every rank; a clear error if the ranks built different models."""
    state = module.state_dict()
    layout = json.dumps([[k, list(v.shape), str(v.dtype)] for k, v in state.items()]).encode()
    for rank, other in enumerate(world.gather_bytes(layout)):
        if other != layout:
            raise DistributedError(f"rank {rank} built a different model than rank {world.rank}: "
                                   f"{other.decode()[:200]} vs {layout.decode()[:200]}")
    for name, value in state.items():
        value = np.ascontiguousarray(value)
        world.broadcast(value, f"broadcast of {name}")
        state[name] = value
    module.load_state_dict(state)


class DistributedDataParallel(Module):
    """Wrap `module` (already on its device) for data-parallel training over `world`'s ranks.

    y = ddp(x) and ddp.backward(dy) as the module's own; ddp.backward(None) is how a rank
    with no samples in a step (a short last batch) still takes part in the all-reduce.
    """

    def __init__(self, module, world=None, bucket_cap_mb=DEFAULT_BUCKET_CAP_MB):
        super().__init__()
        if bucket_cap_mb <= 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, but got {bucket_cap_mb}")
        self.module = module
        self.world = world or init()
        broadcast_state(self.world, module)
        self.buckets = make_buckets(module.parameters(), self.world.size, bucket_cap_mb * 2 ** 20)
        self._samples = 0

    def forward(self, x):
        self._samples = len(x)
        return self.module(x)

    def backward(self, dy):
        dx = None
        if dy is None:
            self._samples = 0
        else:
            dx = self.module.backward(dy)
        self.reduce_gradients(self._samples)
        return dx

    def reduce_gradients(self, samples):
        """Average every parameter's grad over all ranks, weighted by their sample counts."""
        buffers = [b.pack(samples) for b in self.buckets]
        if buffers:
            self._summer(buffers[0])(buffers)
        for b in self.buckets:
            b.unpack()

    def _summer(self, buffer):
        return HostSum(self.world) if isinstance(buffer, np.ndarray) else self.world.nccl()

    def extra_repr(self):
        return f"world_size={self.world.size}, buckets={len(self.buckets)}"
