"""Which float32 products may run in TF32 on tensor cores: PyTorch's
`torch.set_float32_matmul_precision`, for our convolutions and linear layers.

"highest" (the default) keeps every float32 product in float32. Our convolution kernels then
give the same bits on every GPU and on the emulator; linear layers' products, cuBLAS on a GPU
and NumPy's BLAS on the emulator, agree to rounding only (README.md, "What is bit-identical").
"high" lets float32 products run on TF32 tensor cores (sm_80 and later: 10 mantissa bits per
operand, float32 sums), much faster and about 1e-3 relative error; "medium" means the same
here (PyTorch would also allow bfloat16, which we have no kernels for). float64 is never
affected.

- Convolutions run our own TF32 kernels (cuda_kernels/conv2d_tf32.cu), on a GPU and on the
  emulator alike: the emulator gives a GPU's bits when set to its architecture
  (GPUCNN_EMULATOR_ARCH, docs/emulator.md).
- Linear layers' products run cuBLAS in TF32 through CuPy's process-wide switch, set around
  each of our products and restored after (gpucnn/backends/cuda/linear.py). The emulator has
  no cuBLAS and leaves them in float32: cuBLAS's TF32 rounding is unspecified, so there is
  nothing bit-exact to emulate.

PyTorch's defaults differ: its convolutions are TF32 (`torch.backends.cudnn.allow_tf32` is
True) and its matmuls float32 (`torch.backends.cuda.matmul.allow_tf32` is False); ours are
both float32 until "high".
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
    """Whether float32 convolutions and linear layers may use TF32 tensor cores."""
    return _precision != "highest"
