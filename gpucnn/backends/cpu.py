"""NumPy implementations of the kernel set (see `gpucnn.backends` for the contract).

Vectorized over batch, channels and pixels; the only Python loops run over kernel
offsets. Convolutions gather windows with `sliding_window_view` and multiply with BLAS.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pad(x, padding):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _windows(x, kernel, stride):
    """View of x (N, C, H, W) as (N, C, OH, OW, KH, KW) windows, every stride-th one."""
    sh, sw = stride
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


def _im2col(x, kernel, stride, padding):
    """(N*OH*OW, C*KH*KW) matrix of the padded input's windows, and (OH, OW)."""
    win = _windows(_pad(x, padding), kernel, stride)
    N, C, OH, OW, KH, KW = win.shape
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * KH * KW)
    return cols, (OH, OW)


def conv2d_forward(x, w, b, stride, padding):
    O = w.shape[0]
    N = x.shape[0]
    cols, (OH, OW) = _im2col(x, w.shape[2:], stride, padding)
    y = cols @ w.reshape(O, -1).T  # (N*OH*OW, O)
    if b is not None:
        y += b
    return np.ascontiguousarray(y.reshape(N, OH, OW, O).transpose(0, 3, 1, 2))


def spread_to_stride1(dy, stride):
    """Put a stride-S gradient map back on the stride-1 grid, zeros in between (seed 002)."""
    sh, sw = stride
    if sh == 1 and sw == 1:
        return dy
    N, O, OH, OW = dy.shape
    out = np.zeros((N, O, (OH - 1) * sh + 1, (OW - 1) * sw + 1), dtype=dy.dtype)
    out[:, :, ::sh, ::sw] = dy
    return out


def rot180(w):
    """The filter turned by 180 degrees in its two spatial axes (seed 003)."""
    return w[..., ::-1, ::-1]


def conv2d_backward_data(dy, w, x_shape, stride, padding):
    """dL/dx as the seeds derive it: a "full" convolution of dy with rot180(w).

    The stride-S gradient is first spread onto the stride-1 grid; zero-padding it by
    K - 1 on each side makes the correlation with the rotated filter "full". Channel c
    of dx takes channel c of every filter, summed over the filters (seed 002), which is
    a stride-1 convolution with the filter's in/out axes swapped.
    """
    N, C, H, W = x_shape
    KH, KW = w.shape[2:]
    ph, pw = padding
    full = spread_to_stride1(dy, stride)
    w_t = np.ascontiguousarray(rot180(w).transpose(1, 0, 2, 3))  # (C, O, KH, KW)
    dx_padded = conv2d_forward(full, w_t, None, (1, 1), (KH - 1, KW - 1))
    # Rows and columns that no window reached (when (H + 2P - K) % S != 0) get no gradient.
    Hp, Wp = H + 2 * ph, W + 2 * pw
    out = np.zeros((N, C, Hp, Wp), dtype=dy.dtype)
    out[:, :, : dx_padded.shape[2], : dx_padded.shape[3]] = dx_padded[:, :, :Hp, :Wp]
    return np.ascontiguousarray(out[:, :, ph : ph + H, pw : pw + W])


def conv2d_backward_weight(x, dy, w_shape, stride, padding):
    """dL/dw: the layer's input correlated with dy, summed over batch and positions."""
    O = w_shape[0]
    cols, _ = _im2col(x, w_shape[2:], stride, padding)
    dy_mat = dy.transpose(1, 0, 2, 3).reshape(O, -1)  # (O, N*OH*OW)
    return (dy_mat @ cols).reshape(w_shape)


def conv2d_backward_bias(dy):
    return dy.sum(axis=(0, 2, 3))


def max_pool2d_forward(x, kernel, stride):
    """Max over each window; argmax is the in-window index ky*KW+kx of the first maximum.

    np.argmax returns the first NaN when a window holds one, so NaN propagates as in PyTorch.
    """
    win = _windows(x, kernel, stride)
    N, C, OH, OW, KH, KW = win.shape
    flat = win.reshape(N, C, OH, OW, KH * KW)
    argmax = flat.argmax(axis=-1).astype(np.int32)
    y = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return y, argmax


def _strided_slot(kernel_offset, stride, out_size):
    """Slice of input positions that kernel offset k touches in each of the output windows."""
    return slice(kernel_offset, kernel_offset + stride * (out_size - 1) + 1, stride)


def max_pool2d_backward(dy, argmax, x_shape, kernel, stride):
    """Route each window's gradient to its argmax; overlapping windows add up (seeds 001-003)."""
    KH, KW = kernel
    OH, OW = dy.shape[2:]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for ky in range(KH):
        for kx in range(KW):
            rows = _strided_slot(ky, stride[0], OH)
            cols = _strided_slot(kx, stride[1], OW)
            dx[:, :, rows, cols] += np.where(argmax == ky * KW + kx, dy, 0)
    return dx


def avg_pool2d_forward(x, kernel, stride):
    return _windows(x, kernel, stride).mean(axis=(-2, -1))


def avg_pool2d_backward(dy, x_shape, kernel, stride):
    """Split each window's gradient evenly over its KH*KW inputs."""
    KH, KW = kernel
    OH, OW = dy.shape[2:]
    share = dy / (KH * KW)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for ky in range(KH):
        for kx in range(KW):
            dx[:, :, _strided_slot(ky, stride[0], OH), _strided_slot(kx, stride[1], OW)] += share
    return dx


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dy, y):
    return np.where(y > 0, dy, 0).astype(dy.dtype, copy=False)
