"""Gradients packed into a few flat buffers ("buckets"), so that a step makes a few large
collectives instead of one small one per parameter.

The parameter -> bucket map is fixed when the model is wrapped: parameters in reverse
order (the order backward produces their gradients, as in PyTorch's DDP), a new bucket
when the next one would pass the size cap or has another dtype. Every rank builds the same
map from the same model, so the buckets are reduced in the same order everywhere.

Each bucket ends with a small header that is summed along with the gradients: the rank's
number of samples, and a 1 for each parameter that got a gradient. After the sum the
gradients are divided by the total number of samples, which averages them as one process
with the whole global batch would (exactly also when a short last batch splits unevenly),
and a parameter no rank used keeps grad None, as it would in one process.
"""
from .. import cuda


class Bucket:
    def __init__(self, params, world_size):
        self.params = params
        self.offsets, n = [], 0
        for p in params:
            self.offsets.append(n)
            n += p.data.size
        self.count_at = n                   # then one "used" flag per parameter
        used = n + 1 + len(params)
        # Padded to a multiple of the world size: reduce-scatter hands every rank an equal chunk.
        self.size = -(-used // world_size) * world_size
        self.buffer = None

    def pack(self, samples):
        """The gradients times this rank's sample count, and the header, into the flat buffer."""
        if self.buffer is None:
            # zeros_like keeps the array type: NumPy, CuPy, or the emulator's device arrays.
            xp = cuda.get_array_module(self.params[0].data)
            self.buffer = xp.zeros_like(self.params[0].data, shape=(self.size,))
        buf = self.buffer
        buf.fill(0)
        buf[self.count_at] = samples
        for i, (p, at) in enumerate(zip(self.params, self.offsets)):
            if p.grad is not None:
                buf[at:at + p.data.size] = p.grad.reshape(-1) * samples
                buf[self.count_at + 1 + i] = 1
        return buf

    def unpack(self):
        """Average the summed gradients into each parameter's grad (a copy, not a view)."""
        buf = self.buffer
        header = cuda.as_numpy(buf[self.count_at:self.count_at + 1 + len(self.params)])
        total = float(header[0])
        for p, at, used in zip(self.params, self.offsets, header[1:]):
            p.grad = (buf[at:at + p.data.size] / total).reshape(p.data.shape) if used else None


def make_buckets(params, world_size, cap_bytes):
    """Buckets of the parameters in reverse order, each under cap_bytes unless one parameter is larger."""
    buckets, current, size = [], [], 0
    for p in reversed(list(params)):
        nbytes = p.data.size * p.data.dtype.itemsize
        if current and (size + nbytes > cap_bytes or p.data.dtype != current[0].data.dtype):
            buckets.append(current)
            current, size = [], 0
        current.append(p)
        size += nbytes
    if current:
        buckets.append(current)
    return [Bucket(b, world_size) for b in buckets]
