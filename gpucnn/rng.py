"""The dropout masks' random stream: a seed and a count of the masks drawn so far.

A mask is a pure function of (seed, call, element index) through Philox4x32-10 (see
cuda_kernels/dropout.cu), so the NumPy backend and the CUDA kernel draw the same mask, and
backward redraws the forward's mask from its (seed, call) instead of storing it.
`gpucnn.manual_seed` sets the seed and restarts the count.
"""
import numpy as np

_seed = int(np.random.SeedSequence().entropy) % 2**64
_calls = 0


def seed(value):
    """Use value (an int in [0, 2^64)) as the seed, counting calls from 0 again."""
    global _seed, _calls
    _seed, _calls = int(value) % 2**64, 0


def next_call():
    """(seed, call) for the next mask; every call gets a mask of its own."""
    global _calls
    call, _calls = _calls, (_calls + 1) % 2**64
    return _seed, call


def state():
    """[seed, calls]: where the stream stands, for a checkpoint (JSON-ready)."""
    return [_seed, _calls]


def set_state(value):
    """Continue the stream from a `state()`: the masks a run resumed from a checkpoint draws
    are those the run would have drawn had it never stopped."""
    global _seed, _calls
    _seed, _calls = int(value[0]) % 2**64, int(value[1]) % 2**64
