"""Which float32 products may run in TF32 on tensor cores: PyTorch's
`torch.set_float32_matmul_precision`, for our convolutions.

"highest" (the default) keeps every float32 product in float32: results are the same bits on
every GPU and on the emulator. "high" lets float32 convolutions run on TF32 tensor cores
(sm_80 and later: 10 mantissa bits per operand, float32 sums), much faster and about 1e-3
relative error; "medium" means the same here (PyTorch would also allow bfloat16, which we
have no kernels for). float64 is never affected. PyTorch convolves in TF32 by default
(`torch.backends.cudnn.allow_tf32` is True); we do not.
"""
PRECISIONS = ("highest", "high", "medium")
_precision = "highest"


def set_float32_matmul_precision(precision):
    global _precision
    if precision not in PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: precision must be one of {', '.join(PRECISIONS)}, "
                         f"but got {precision!r}")
    _precision = precision


def get_float32_matmul_precision():
    return _precision


def tf32_allowed():
    """Whether float32 convolutions may use TF32 tensor cores."""
    return _precision != "highest"
