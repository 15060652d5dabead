"""Parameter initialization as torch.nn's defaults, from a seedable generator."""
import math

import numpy as np

from .. import rng

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator that initializes every new layer's parameters, and the dropout
    masks' stream (`gpucnn.rng`), as torch.manual_seed seeds both."""
    global _generator
    _generator = np.random.default_rng(seed)
    rng.seed(seed)


def uniform(shape, bound, dtype=np.float32):
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_uniform(shape, fan_in):
    """torch.nn.init.kaiming_uniform_(w, a=sqrt(5)), the default of Conv and Linear.

    gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    """
    return uniform(shape, 1.0 / math.sqrt(fan_in))


def bias_uniform(shape, fan_in):
    """torch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)
