"""DistributedDataParallel: one model per rank, the same weights everywhere, gradients averaged.

As torch.nn.parallel.DistributedDataParallel: wrapping broadcasts rank 0's weights (and
anything else in the state_dict, such as BatchNorm's running statistics) to every rank;
after each backward the gradients are summed over ranks in fixed buckets and averaged, so
that the same optimizer step on every rank keeps the weights bit-identical. BatchNorm's
batch statistics stay per rank, as DDP's default.

Unlike PyTorch's, the average is weighted by each rank's number of samples (the loss must
be a mean over the batch, as CrossEntropyLoss and MSELoss are): N ranks then step exactly
as one process with the whole global batch, also when a last batch splits unevenly.

For a Sequential, backward runs layer by layer and each bucket's sum starts as soon as the
layers holding its parameters are done (buckets hold parameters in reverse order, so they
become ready first to last), overlapping the rest of backward, as DDP's hooks do. NCCL
then really runs alongside; MPI on the host moves only when called, so between layers the
started sums are polled. Other modules get their sums after the whole backward.
"""
import json

import numpy as np

from .. import cuda
from ..nn import Module, Sequential
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
        self.stages = backward_stages(module)
        self._samples = 0
        self._summer = None

    def forward(self, x):
        self._samples = len(x)
        return self.module(x)

    def backward(self, dy, input_grad=True):
        """The module's backward, each bucket's sum started as soon as its gradients are final;
        input_grad=False skips the input gradient, as Sequential.backward does."""
        if dy is None:
            self._samples = 0
            self.reduce_gradients(self._samples)
            return None
        if self.stages is None:
            dx = self.module.backward(dy) if input_grad else self.module.parameters_backward(dy)  # None
            self.reduce_gradients(self._samples)
            return dx
        started, final = 0, set()
        for i, layer in enumerate(self.stages):
            if input_grad or i + 1 < len(self.stages):
                dy = layer.backward(dy)
            else:  # the first layer, whose input is data
                layer.parameters_backward(dy)
                dy = None
            final.update(id(p) for p in layer.parameters())
            while started < len(self.buckets) and all(id(p) in final for p in self.buckets[started].params):
                self._start(self.buckets[started], self._samples)
                started += 1
            if self._summer is not None:
                self._summer.progress()
        self._finish()
        return dy

    def reduce_gradients(self, samples):
        """Average every parameter's grad over all ranks, weighted by their sample counts."""
        for b in self.buckets:
            self._start(b, samples)
        self._finish()

    def _start(self, bucket, samples):
        buf = bucket.pack(samples)
        if self._summer is None:  # CuPy's arrays through NCCL; NumPy's and the emulator's through MPI on the host
            cp = cuda.cupy_if_loaded()
            self._summer = self.world.nccl() if cp is not None and isinstance(buf, cp.ndarray) else HostSum(self.world)
        self._summer.start(buf)

    def _finish(self):
        if self._summer is not None:
            self._summer.finish()
        for b in self.buckets:
            b.unpack()

    def extra_repr(self):
        return f"world_size={self.world.size}, buckets={len(self.buckets)}, overlap={self.stages is not None}"


def backward_stages(module):
    """The layers of a Sequential in backward order, when each parameter belongs to exactly one
    of them (so its gradient is final once that layer's backward has run); else None, and the
    sums start only after the whole backward."""
    if type(module) is not Sequential:  # a subclass may run its layers otherwise
        return None
    layers = list(module)
    owned = [id(p) for m in layers for p in m.parameters()]
    if len(owned) != len(set(owned)) or len(owned) != len(module.parameters()):
        return None
    return layers[::-1]
