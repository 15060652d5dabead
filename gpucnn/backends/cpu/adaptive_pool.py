"""NumPy adaptive average pooling (see `gpucnn.backends` for the contract).

Averaging over a window of rows and a window of columns is separable: y = P_H x P_W^T with
P[o, i] = 1/size(window o) for the inputs in window o. Two batched matrix products on BLAS,
whatever the windows' sizes and overlaps; backward is dx = P_H^T dy P_W.
"""
import numpy as np


def window(o, I, O):
    """PyTorch's window of output o over I inputs: [floor(o*I/O), ceil((o+1)*I/O))."""
    return o * I // O, -(-(o + 1) * I // O)


def averaging_matrix(I, O, dtype):
    P = np.zeros((O, I), dtype=dtype)
    for o in range(O):
        start, end = window(o, I, O)
        P[o, start:end] = 1 / (end - start)
    return P


def adaptive_avg_pool2d_forward(x, output_size):
    (_, _, H, W), (OH, OW) = x.shape, output_size
    return averaging_matrix(H, OH, x.dtype) @ x @ averaging_matrix(W, OW, x.dtype).T


def adaptive_avg_pool2d_backward(dy, x_shape):
    (_, _, H, W), (OH, OW) = x_shape, dy.shape[2:]
    return averaging_matrix(H, OH, dy.dtype).T @ dy @ averaging_matrix(W, OW, dy.dtype)
