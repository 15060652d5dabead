"""Global memory as the checking mode sees it (see sanitizer.h).

Each launch's array arguments are copied into buffers of their own, between redzones, so
that an access past an array's end is caught in the redzone instead of landing in whatever
array happens to lie next to it. Arguments whose memory overlaps (the same array twice, or
views of one array) share a buffer, so that the kernel sees their aliasing as a GPU would.

Memory that the CUDA backend allocates with `empty` holds nothing meaningful until a kernel
writes it: `mark_uninitialized` records that, byte by byte, across launches, so that a kernel
reading a byte no kernel wrote is reported. Every other array counts as written by the host.
"""
import ctypes
import weakref

import numpy as np

REDZONE_BYTES = 256
GRANULE_BYTES = 4  # sanitizer.h: one Granule of 48 bytes per 4 bytes of data
GRANULE_SHADOW_BYTES = 48

_unwritten = {}  # token -> _Unwritten, while some byte of that memory was never written


class _Unwritten:
    def __init__(self, start, nbytes):
        self.start = start
        self.written = np.zeros(nbytes, np.uint8)

    def overlap(self, start, size):
        """(first, last) bytes of [start, start + size) that lie in this memory, or None."""
        first, last = max(start, self.start), min(start + size, self.start + len(self.written))
        return (first, last) if first < last else None


def mark_uninitialized(array):
    """Record that `array` holds no data yet; returns it. Until the array's memory is freed, a
    kernel launched in the checking mode that reads a byte of it that no kernel has written is
    reported as an uninitialized read."""
    if array.nbytes:
        entry = _Unwritten(array.ctypes.data, array.nbytes)
        owner = array
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        token = id(entry)
        _unwritten[token] = entry
        weakref.finalize(owner, _unwritten.pop, token, None)  # freed memory may be reused
    return array


class _Buffer:
    """One checked buffer: a copy of [start, start + size) of host memory, its redzones and shadows."""

    def __init__(self, start, size, names, writable):
        self.start, self.size, self.writable = start, size, writable
        self._memory = np.empty(size + 2 * REDZONE_BYTES + 256, np.uint8)
        base = self._memory.ctypes.data + REDZONE_BYTES
        # The copy's address is the original's modulo 256: alignment, and misalignment, are kept.
        self.data = base + (start - base) % 256
        ctypes.memmove(self.data, start, size)
        self.written = np.ones(max(size, 1), np.uint8)
        for entry in _unwritten.values():
            span = entry.overlap(start, size)
            if span:
                self.written[span[0] - start:span[1] - start] = entry.written[span[0] - entry.start:span[1] - entry.start]
        self.granules = np.zeros((size // GRANULE_BYTES + 1) * GRANULE_SHADOW_BYTES, np.uint8)
        self.name = ctypes.create_string_buffer(names.encode())

    def row(self):
        """This buffer's row of the table that sanitizer.h reads."""
        return [ctypes.addressof(self.name), self.data, self.size, REDZONE_BYTES, self.written.ctypes.data,
                self.granules.ctypes.data]

    def copy_back(self):
        if self.writable:
            ctypes.memmove(self.start, self.data, self.size)
        for token, entry in list(_unwritten.items()):
            span = entry.overlap(self.start, self.size)
            if span:
                entry.written[span[0] - entry.start:span[1] - entry.start] = \
                    self.written[span[0] - self.start:span[1] - self.start]
                if entry.written.all():
                    del _unwritten[token]


class Checked:
    """The context of one checked launch: its pointer slots point into checked buffers, which
    are copied back, with what they learned about written bytes, when it ends."""

    def __init__(self, library, parameters, args, slots):
        self._library, self._parameters, self._args, self._slots = library, parameters, args, slots
        self._buffers = []

    def __enter__(self):
        pointers = sorted(
            ((arg.ctypes.data, arg.nbytes, i, param) for i, (param, arg) in enumerate(zip(self._parameters, self._args))
             if param.kind == "pointer"),
            key=lambda p: p[0],
        )
        groups = []  # arguments whose bytes overlap share one buffer
        for start, nbytes, i, param in pointers:
            if groups and nbytes and start < groups[-1][1]:
                groups[-1][1] = max(groups[-1][1], start + nbytes)
                groups[-1][2].append((start, i, param))
            else:
                groups.append([start, start + nbytes, [(start, i, param)]])
        for start, end, members in groups:
            names = " and ".join(f"argument {i} ({param.name})" for _, i, param in members)
            buffer = _Buffer(start, end - start, names, any(not param.const for _, _, param in members))
            for member_start, i, _ in members:
                self._slots[i] = buffer.data + (member_start - start)
            self._buffers.append(buffer)
        table = np.array([b.row() for b in self._buffers] or [[0] * 6], np.uint64)
        self._library.gpucnn_emu_set_regions(ctypes.c_void_p(table.ctypes.data), ctypes.c_uint(len(self._buffers)))
        return self

    def __exit__(self, *exc):
        self._library.gpucnn_emu_set_regions(ctypes.c_void_p(None), ctypes.c_uint(0))
        for buffer in self._buffers:
            buffer.copy_back()
        return False
