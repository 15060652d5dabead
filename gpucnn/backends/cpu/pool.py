"""NumPy max and average pooling (see `gpucnn.backends` for the contract).

Whole-array passes, one per offset in the window: the only Python loops run over the
KH*KW offsets.
"""
import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...checks import output_size
from ._common import finite, scratch


def _windows(x, kernel, stride):
    """View of x (N, C, H, W) as (N, C, OH, OW, KH, KW) windows, every stride-th one."""
    sh, sw = stride
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


def _strided_slot(kernel_offset, stride, out_size):
    """Slice of input positions that kernel offset k touches in each of the output windows."""
    return slice(kernel_offset, kernel_offset + stride * (out_size - 1) + 1, stride)


def _offsets(x_shape, kernel, stride):
    """(k, slots) for each in-window offset k = ky*KW+kx: the input pixels it covers, window by window."""
    KH, KW = kernel
    OH, OW = (output_size(s, k, st, 0) for s, k, st in zip(x_shape[2:], kernel, stride))
    for ky in range(KH):
        for kx in range(KW):
            yield ky * KW + kx, (slice(None), slice(None), _strided_slot(ky, stride[0], OH), _strided_slot(kx, stride[1], OW))


def max_pool2d_forward(x, kernel, stride):
    """Max over each window; argmax is the in-window index ky*KW+kx of the first maximum.

    Whole-array passes, one per window offset: the max first, then the argmax as the
    number of leading offsets that do not hold it, so the first maximum wins ties. NaN
    propagates through np.maximum; a window whose max is NaN matches none of its values
    and gets the index of its first NaN, as np.argmax would give.
    """
    slots = [s for _, s in _offsets(x.shape, kernel, stride)]
    y = x[slots[0]].copy()
    for s in slots[1:]:
        np.maximum(y, x[s], out=y)
    argmax = np.zeros(y.shape, dtype=np.int32)
    missed = np.not_equal(x[slots[0]], y)
    for s in slots[1:]:
        argmax += missed
        missed &= np.not_equal(x[s], y)
    if missed.any():
        windows = _windows(x, kernel, stride)[missed]
        argmax[missed] = np.isnan(windows.reshape(len(windows), -1)).argmax(axis=1)
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride):
    """Route each window's gradient to its argmax; overlapping windows add up (seeds 001-003).

    Overlapping windows add up by stride phases: the inputs r, r + S, ... of one residue r
    take the offsets r, r + S, ..., each shifted by offset // S, so every add runs over a
    compact array and each phase goes into dx once. Adding into dx's strided slots
    instead ran 9x slower (3x3 windows, stride 2). A pixel's terms come in the same
    order either way.
    """
    (KH, KW), (SH, SW) = kernel, stride
    masks_multiply = finite(dy)
    if SH >= KH and SW >= KW:  # each input in at most one window: one write per offset
        dx = np.zeros(x_shape, dtype=dy.dtype)
        for k, slots in _offsets(x_shape, kernel, stride):
            if masks_multiply:
                np.multiply(dy, argmax == k, out=dx[slots])
            else:
                np.copyto(dx[slots], dy, where=argmax == k)
        return dx
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dtype=dy.dtype)
    for ry, rx in itertools.product(range(min(SH, H)), range(min(SW, W))):
        phase = scratch("pool_phase", (N, C, len(range(ry, H, SH)), len(range(rx, W, SW))), dy.dtype, zero=True)
        for ky, kx in itertools.product(range(ry, KH, SH), range(rx, KW, SW)):
            # the temporaries in scratch memory too: fresh ones cost a page fault per 4 KiB
            chosen = np.equal(argmax, ky * KW + kx, out=scratch("pool_chosen", dy.shape, bool))
            target = phase[:, :, ky // SH : ky // SH + OH, kx // SW : kx // SW + OW]
            if masks_multiply:
                target += np.multiply(dy, chosen, out=scratch("pool_routed", dy.shape, dy.dtype))
            else:
                np.add(target, dy, out=target, where=chosen)
        dx[:, :, ry::SH, rx::SW] = phase
    return dx


def avg_pool2d_forward(x, kernel, stride):
    return _windows(x, kernel, stride).mean(axis=(-2, -1))


def avg_pool2d_backward(dy, x_shape, kernel, stride):
    """Split each window's gradient evenly over its KH*KW inputs."""
    share = dy / (kernel[0] * kernel[1])
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for _, slots in _offsets(x_shape, kernel, stride):
        dx[slots] += share
    return dx
