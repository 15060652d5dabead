"""Finite-difference gradient checks, after Chainer's `gradient_check.check_backward`.

A module's backward is checked against central differences of the scalar
L = <module(x), dy> for a random projection dy, with respect to the input AND every
parameter. Loss modules return a 0-d array; then L = loss * dy for a random 0-d dy.
Run it in float64: with eps = 1e-6 the central difference is exact to about 1e-9.
"""
import numpy as np

from gpucnn.cuda import as_numpy, device_of, to_device


def numerical_grad(objective, x, eps):
    """dL/dx by central differences, perturbing x in place one element at a time."""
    grad = np.zeros(x.shape, dtype=np.float64)
    assert x.flags.c_contiguous, "numerical_grad perturbs x in place through a flat view: x must be C-contiguous"
    flat = x.reshape(-1)
    for i in range(flat.size):
        orig = flat[i].copy()
        flat[i] = orig + eps
        up = objective()
        flat[i] = orig - eps
        down = objective()
        flat[i] = orig
        grad.reshape(-1)[i] = (up - down) / (2 * eps)
    return grad


def check_backward(module, x, *targets, dy=None, eps=1e-6, rtol=1e-6, atol=1e-8, seed=0):
    """Assert that module.backward gives dL/dx and every parameter's dL/dp (float64 only).

    module(x, *targets) -> array y (0-d for losses); module.backward(dy) -> dx and
    p.grad for p in module.parameters(). targets (class labels, regression targets) are
    held fixed. Returns the analytic dx, for tests that want to look at it further.
    """
    assert x.dtype == np.float64, "gradient checks need float64 inputs"
    params = list(module.named_parameters())
    for _, p in params:
        assert p.data.dtype == np.float64, "gradient checks need a float64 module (.double())"
    rng = np.random.default_rng(seed)
    y = module(x, *targets)
    assert device_of(y) == device_of(x), f"output on {device_of(y)}, the input on {device_of(x)}"
    if dy is None:
        # on the input's device, so that the same check runs a module moved to "cuda"
        dy = to_device(rng.standard_normal(y.shape), device_of(x))
    dy_host = np.asarray(as_numpy(dy), dtype=np.float64)

    def objective():
        return float(np.sum(np.asarray(as_numpy(module(x, *targets))) * dy_host))

    module.zero_grad()
    module(x, *targets)  # backward needs the forward of the unperturbed point
    dx = module.backward(dy)
    analytic = [("input", dx)] + [(f"parameter {name}", p.grad) for name, p in params]
    numeric = [numerical_grad(objective, x, eps)] + [numerical_grad(objective, p.data, eps) for _, p in params]
    for (what, got), want in zip(analytic, numeric):
        assert got is not None, f"{type(module).__name__}: backward left no gradient for {what}"
        assert device_of(got) == device_of(x), f"{what}: gradient on {device_of(got)}, the input on {device_of(x)}"
        got = as_numpy(got)
        assert got.shape == want.shape, f"{what}: gradient shape {got.shape}, expected {want.shape}"
        assert got.dtype == np.float64, f"{what}: gradient dtype {got.dtype}, expected float64"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{type(module).__name__}: d/d{what}")
    return dx
