"""NumPy activations (see `gpucnn.backends` for the contract): torch's formulas."""
import math

import numpy as np
from numpy.polynomial import chebyshev

from ._common import elementwise


def relu_forward(x):
    return elementwise(lambda x, out: np.maximum(x, 0, out=out), np.empty(x.shape, x.dtype), x)


def relu_backward(dy, y):
    """dy where y > 0, else +0, as relu.cu's select: dy's bits anded with a mask of all ones
    or all zeros, so that a NaN or inf of dy where y <= 0 gives 0 (a multiply by 0 would give NaN)."""
    bits = np.dtype(f"i{dy.itemsize}")

    def select(dy, y, out):
        mask = np.negative(np.greater(y, 0).view(np.int8), dtype=bits)
        np.bitwise_and(dy.view(bits), mask, out=out.view(bits))

    return elementwise(select, np.empty(dy.shape, dy.dtype), dy, y)


def leaky_relu_forward(x, negative_slope):
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward(dy, x, negative_slope):
    return np.where(x > 0, dy, dy * dy.dtype.type(negative_slope))


def sigmoid_forward(x):
    """1 / (1 + e^-x); e^-x overflows to infinity for very negative x, giving the limit 0."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_backward(dy, y):
    return dy * (1 - y) * y


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dy, y):
    return dy * (1 - y * y)


# erf on [0, ERF_END) as ERF_PIECES Chebyshev interpolants of degree ERF_DEGREE, made once from
# math.erf and math.erfc (NumPy has no erf; scipy is not a dependency). Below ERFC_FROM the
# pieces interpolate erf(z)/z, so that erf keeps its relative accuracy down to 0; from
# ERFC_FROM on they interpolate erfc, to which they are relatively accurate, and 1 - erfc is
# then exact to rounding; beyond ERF_END, erf is 1 in float64. Evaluated by Clenshaw's recurrence:
# within 1e-15 of math.erf everywhere (tests/test_activation.py), at about ten times the cost
# of np.tanh.
ERF_END, ERF_PIECES, ERF_DEGREE, ERFC_FROM = 6.0, 48, 8, 1.0
_erf_coefficients = None


def _erf_pieces():
    global _erf_coefficients
    if _erf_coefficients is None:
        width = ERF_END / ERF_PIECES
        # Chebyshev points of the first kind exclude the ends: z = 0 is never a node of erf(z)/z.
        erf_by_z = np.frompyfunc(lambda z: math.erf(z) / z, 1, 1)
        erfc = np.frompyfunc(math.erfc, 1, 1)
        _erf_coefficients = np.array([
            chebyshev.chebinterpolate(
                lambda t, p=p: (erf_by_z if p * width < ERFC_FROM else erfc)((t + 1) * (width / 2) + p * width)
                .astype(np.float64), ERF_DEGREE)
            for p in range(ERF_PIECES)
        ]).T.copy()  # [k, piece]: coefficient k of every piece, contiguous
    return _erf_coefficients


def erf(x):
    """The error function of a float array, computed in float64, returned in x's dtype."""
    coefficients = _erf_pieces()
    nan = np.isnan(x)
    # NaN goes through piece 0 (an index must be an integer) and comes out NaN again below.
    z = np.abs(np.where(nan, 0, x).astype(np.float64))
    scaled = np.minimum(z, ERF_END) * (ERF_PIECES / ERF_END)
    piece = np.minimum(scaled.astype(np.intp), ERF_PIECES - 1)
    t = 2 * (scaled - piece) - 1  # the position in the piece, in [-1, 1]
    b1, b2 = np.zeros_like(t), np.zeros_like(t)
    for k in range(ERF_DEGREE, 0, -1):
        b1, b2 = coefficients[k][piece] + 2 * t * b1 - b2, b1
    value = coefficients[0][piece] + t * b1 - b2
    y = np.where(z >= ERF_END, 1.0, np.where(z >= ERFC_FROM, 1 - value, z * value))
    return np.where(nan, np.nan, np.copysign(y, x)).astype(x.dtype)


_SQRT1_2, _INV_SQRT_2PI, _SQRT_2_PI, _KAPPA = math.sqrt(0.5), 1 / math.sqrt(2 * math.pi), math.sqrt(2 / math.pi), 0.044715


def _gelu_tanh(x):
    return np.tanh(x.dtype.type(_SQRT_2_PI) * (x + x.dtype.type(_KAPPA) * x * x * x))


def gelu_forward(x, approximate):
    """x Phi(x) = x/2 (1 + erf(x / sqrt 2)); approximate='tanh': x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    f = _gelu_tanh(x) if approximate == "tanh" else erf(x * x.dtype.type(_SQRT1_2))
    return x * x.dtype.type(0.5) * (1 + f)


def gelu_backward(dy, x, approximate):
    half = x.dtype.type(0.5)
    if approximate == "tanh":
        t = _gelu_tanh(x)
        inner_slope = x.dtype.type(_SQRT_2_PI) * (1 + x.dtype.type(3 * _KAPPA) * x * x)
        return dy * (half * (1 + t) + half * x * (1 - t * t) * inner_slope)
    cdf = half * (1 + erf(x * x.dtype.type(_SQRT1_2)))
    pdf = np.exp(-half * x * x) * x.dtype.type(_INV_SQRT_2PI)
    return dy * (cdf + x * pdf)
