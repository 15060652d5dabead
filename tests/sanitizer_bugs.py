"""How to launch each deliberately wrong kernel of sanitizer_bugs.cu, and what must report it:
the emulator's check (tests/test_sanitizer.py) and the compute-sanitizer tool that covers the
same class on a GPU (scripts/sanitizer_bugs.py)."""
from collections import namedtuple
from pathlib import Path

import numpy as np

SOURCE = (Path(__file__).parent / "sanitizer_bugs.cu").read_text()

Launch = namedtuple("Launch", "check tool grid block args shared_mem", defaults=(0,))


def f32(n, value=None):
    return np.arange(n, dtype=np.float32) if value is None else np.full(n, value, np.float32)


# args: a function making the arguments afresh (NumPy arrays and scalars).
LAUNCHES = {
    "read_past_end": Launch("out-of-bounds", "memcheck", 1, 64, lambda: (f32(40), f32(40), np.int32(41))),
    "read_far_away": Launch("out-of-bounds", "memcheck", 1, 32, lambda: (f32(32), f32(32))),
    "write_past_end": Launch("out-of-bounds", "memcheck", 1, 65, lambda: (f32(64), f32(64, 0.0), np.int32(65))),
    "shared_past_end": Launch("out-of-bounds", "memcheck", 1, 33, lambda: (f32(33), f32(33))),
    "dynamic_shared_past_end": Launch("out-of-bounds", "memcheck", 1, 16, lambda: (f32(16),), 64),
    "misaligned_float4": Launch("misaligned", "memcheck", 1, 4, lambda: (f32(64), f32(4))),
    "misaligned_float2": Launch("misaligned", "memcheck", 1, 4, lambda: (f32(64), f32(4))),
    "misaligned_double": Launch("misaligned", "memcheck", 1, 4, lambda: (f32(64), np.zeros(4))),
    "neighbour_without_barrier": Launch("race", "racecheck", 1, 64, lambda: (f32(64), f32(64))),
    "tile_loop_missing_barrier": Launch("race", "racecheck", 1, 64, lambda: (f32(128), f32(64), np.int32(2))),
    "tree_missing_barrier": Launch("race", "racecheck", 1, 64, lambda: (f32(64), f32(1))),
    "warp_synchronous_reduction": Launch("race", "racecheck", 1, 64, lambda: (f32(64), f32(1))),
    "reads_another_blocks_output": Launch("race", "racecheck", 2, 32, lambda: (f32(64),)),
    "counter_without_atomic": Launch("race", "racecheck", 1, 1024, lambda: (f32(1, 0.0),)),
    "unwritten_shared_through_fmaxf": Launch("uninitialized", "initcheck", 1, 64, lambda: (f32(64), f32(64))),
    "unwritten_shared_int": Launch("uninitialized", "initcheck", 1, 64, lambda: (np.zeros(1, np.int32),)),
    "divergent_barriers": Launch("barrier", "synccheck", 1, 64, lambda: (f32(64),)),
    "barrier_after_early_return": Launch("barrier", "synccheck", 1, 64, lambda: (f32(64), f32(64), np.int32(40))),
    "shuffle_with_exited_lanes": Launch("barrier", "synccheck", 1, 32, lambda: (f32(32), f32(32))),
    "bounded_to_128": Launch("launch", "memcheck", 1, 256, lambda: (f32(256),)),
}
