"""The dispatch seam: the one place where an op picks its NumPy or its CUDA implementation.

`cpu` and `cuda` define the same functions with the same arguments (NCHW arrays, 2-tuples
for kernel, stride, padding and dilation). Layers call `ops_for(x).conv2d_forward(...)`
and never look at the backend themselves. 1D layers use these 2D ops with H = 1.

    conv2d_forward(x, w, b, stride, padding, dilation=(1, 1), groups=1) -> y     (b may be None)
    conv2d_backward_data(dy, w, x_shape, stride, padding, dilation=(1, 1), groups=1) -> dx
    conv2d_backward_weight(x, dy, w_shape, stride, padding, dilation=(1, 1), groups=1) -> dw
        w: (O, C/groups, KH, KW); padding is symmetric (the layer turns padding="same"
        into it); dilation D spreads the taps D apart, spanning D*(K-1)+1 pixels
    conv2d_backward_bias(dy) -> db
    max_pool2d_forward(x, kernel, stride, padding=(0, 0), ceil_mode=False) -> (y, argmax)
        argmax: int32 index ky*KW+kx in the window, from its corner in the padded input;
        PyTorch's pick: the first maximum, or the last NaN
    max_pool2d_backward(dy, argmax, x_shape, kernel, stride, padding=(0, 0), ceil_mode=False) -> dx
    avg_pool2d_forward(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True) -> y
    avg_pool2d_backward(dy, x_shape, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True) -> dx
        pooling pads by at most half the window; ceil_mode rounds the output size up
        (PyTorch's rule: no window starts past the input and its leading padding)
    relu_forward(x) -> y
    relu_backward(dy, y) -> dx
    leaky_relu_forward(x, negative_slope) -> y
    leaky_relu_backward(dy, x, negative_slope) -> dx
    sigmoid_forward(x) -> y,    sigmoid_backward(dy, y) -> dx
    tanh_forward(x) -> y,       tanh_backward(dy, y) -> dx
    gelu_forward(x, approximate) -> y                         approximate: "none" (erf) or "tanh"
    gelu_backward(dy, x, approximate) -> dx

Batch normalization takes (N, C, S) arrays (S = H*W, or L, or 1) and per-channel (C,) arrays:

    batch_norm_statistics(x) -> (mean, var)                     var biased (divided by N*S)
    batch_norm_invstd(var, eps) -> 1 / sqrt(var + eps)
    batch_norm_update_running(running_mean, running_var, mean, var, factor, M)
                              in place: r = (1 - factor) r + factor b, var unbiased (x M/(M-1))
    batch_norm_forward(x, mean, invstd, weight, bias) -> y
    batch_norm_backward_reduce(dy, x, mean, invstd) -> (dweight, dbias)
    batch_norm_backward_data(dy, x, mean, invstd, weight, dweight, dbias, batch_stats) -> dx
    dropout_apply(x, seed, call, threshold, scale) -> x * (scale where kept, else 0)
                              kept: top 24 bits of Philox4x32-10 word >= threshold (dropout.cu)
    adaptive_avg_pool2d_forward(x, output_size) -> y
    adaptive_avg_pool2d_backward(dy, x_shape) -> dx

Linear's products, of 2-D arrays of one dtype:

    matmul(a, b) -> a @ b       on cuBLAS in TF32 where set_float32_matmul_precision allows it
"""
# Not `from .. import cuda`: importing the submodule backends.cuda rebinds that name here.
from ..cuda import is_cuda_array


def ops_for(x):
    """The backend module for the device that x lives on."""
    if is_cuda_array(x):
        from . import cuda as cuda_ops
        return cuda_ops
    from . import cpu
    return cpu
