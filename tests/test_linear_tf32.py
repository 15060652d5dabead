"""TF32 for Linear's float32 products under set_float32_matmul_precision("high"): CuPy's own
switch (cupy._core._routines_linalg.set_compute_type) is on during each of our products and
back to what it was after, here with a stand-in for CuPy that records what every product
saw; and on the emulator, which has no cuBLAS, "high" changes nothing for linear layers."""
import sys
import types

import numpy as np
import pytest

from gpucnn import cuda, functional as F, nn

from test_conv_tf32 import precision  # noqa: F401 (a fixture)

DEFAULT, PEDANTIC, TF32 = 1, 2, 7  # CuPy's COMPUTE_TYPE_* values


class FakeCupy:
    """Just enough of CuPy for Linear: an ndarray (a NumPy subclass whose products record the
    float32 compute type they ran under), the device's compute capability and the switch."""

    def __init__(self, compute_capability):
        fake = self
        self.products, self.sets, self.fail = [], [], False
        self.compute_types = {}  # dtype char -> compute type, as CuPy's module-level list

        class ndarray(np.ndarray):
            def __matmul__(self, other):
                if fake.fail:
                    raise RuntimeError("cuBLAS failed")
                fake.products.append((self.ndim, other.ndim, fake.get_compute_type(self.dtype)))
                return np.ndarray.__matmul__(self, other)

        linalg = types.SimpleNamespace(COMPUTE_TYPE_DEFAULT=DEFAULT, COMPUTE_TYPE_TF32=TF32,
                                       get_compute_type=self.get_compute_type, set_compute_type=self.set_compute_type)
        self.ndarray = ndarray
        self.module = types.ModuleType("cupy")
        self.module.ndarray = ndarray
        self.module.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(
            compute_capability=str(compute_capability)))
        self.module._core = types.ModuleType("cupy._core")
        self.module._core._routines_linalg = linalg

    def get_compute_type(self, dtype):
        return self.compute_types.setdefault(np.dtype(dtype).char, DEFAULT)

    def set_compute_type(self, dtype, compute_type):
        self.sets.append((np.dtype(dtype).char, compute_type))
        self.compute_types[np.dtype(dtype).char] = compute_type

    def array(self, a):
        return np.ascontiguousarray(a).view(self.ndarray)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Device "cuda" on a stand-in CuPy: make(compute_capability) installs one."""
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)

    def make(compute_capability=90):
        fake = FakeCupy(compute_capability)
        monkeypatch.setitem(sys.modules, "cupy", fake.module)
        monkeypatch.setitem(sys.modules, "cupy._core", fake.module._core)
        return fake
    return make


def train_step(fake, dtype, leading=(5,)):
    """A Linear's forward and backward on the fake GPU; returns the layer."""
    layer = nn.Linear(4, 3)
    if dtype == np.float64:
        layer.double()
    for p in layer.parameters():
        p.data = fake.array(p.data)
    rng = np.random.default_rng(0)
    x = fake.array(rng.standard_normal(leading + (4,)).astype(dtype))
    y = layer(x)
    assert cuda.device_of(y) == "cuda" and y.shape == leading + (3,)
    layer.backward(fake.array(np.ones(y.shape, dtype)))
    return layer


@pytest.mark.parametrize("leading", [(5,), (2, 3)], ids=["2-D", "3-D"])
def test_high_runs_every_float32_product_in_tf32_and_restores_cupys_setting(fake_gpu, precision, leading):
    fake = fake_gpu()
    fake.set_compute_type(np.float32, PEDANTIC)  # the user's own choice, which must survive
    precision("high")
    train_step(fake, np.float32, leading)
    # forward, input gradient, weight gradient: each one 2-D product (the shape CuPy's switch
    # applies to) under TF32, and the user's setting back after each.
    assert fake.products == [(2, 2, TF32)] * 3
    assert fake.compute_types["f"] == PEDANTIC and fake.sets[-1] == ("f", PEDANTIC)


@pytest.mark.parametrize("setting, dtype, compute_capability", [
    ("highest", np.float32, 90), ("high", np.float64, 90), ("high", np.float32, 75)],
    ids=["highest", "float64", "before-sm_80"])
def test_the_switch_is_left_alone_where_tf32_is_not_allowed(fake_gpu, precision, setting, dtype, compute_capability):
    fake = fake_gpu(compute_capability)
    precision(setting)
    train_step(fake, dtype)
    assert len(fake.products) == 3 and fake.sets == []
    assert all(compute_type == DEFAULT for *_, compute_type in fake.products)


def test_a_failed_product_still_restores_the_switch(fake_gpu, precision):
    fake = fake_gpu()
    precision("high")
    w = fake.array(np.ones((3, 4), np.float32))
    fake.fail = True
    with pytest.raises(RuntimeError, match="cuBLAS failed"):
        F.linear(fake.array(np.ones((2, 4), np.float32)), w)
    assert fake.compute_types["f"] == DEFAULT


def test_on_the_emulator_high_leaves_linear_layers_bit_identical(monkeypatch, precision):
    """No cuBLAS to emulate: "high" changes the emulator's convolutions, never its matmuls."""
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    rng = np.random.default_rng(1)
    x, w, b = (cuda.to_device(rng.standard_normal(s).astype(np.float32), "cuda") for s in ((6, 7), (5, 7), (5,)))
    strict = cuda.as_numpy(F.linear(x, w, b))
    precision("high")
    np.testing.assert_array_equal(cuda.as_numpy(F.linear(x, w, b)), strict)
    np.testing.assert_allclose(strict, cuda.as_numpy(x) @ cuda.as_numpy(w).T + cuda.as_numpy(b), rtol=1e-6)


@pytest.mark.gpu
def test_on_a_gpu_high_gives_tf32_sized_errors_and_leaves_cupys_setting(monkeypatch, precision):
    cupy = pytest.importorskip("cupy")
    from cupy._core import _routines_linalg as linalg
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)
    if int(cupy.cuda.Device().compute_capability) < 80:
        pytest.skip("TF32 needs sm_80 or later")
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((256, 1024)), rng.standard_normal((128, 1024))
    want = x @ w.T
    before = linalg.get_compute_type(np.float32)
    if before == linalg.COMPUTE_TYPE_TF32:
        pytest.skip("CUPY_TF32=1 makes every float32 product TF32 already")

    def error():
        y = F.linear(cuda.to_device(x.astype(np.float32), "cuda"), cuda.to_device(w.astype(np.float32), "cuda"))
        return np.abs(cuda.as_numpy(y) - want).max()

    strict = error()
    precision("high")
    assert error() > 10 * strict  # 10 mantissa bits per operand against 23
    assert linalg.get_compute_type(np.float32) == before
