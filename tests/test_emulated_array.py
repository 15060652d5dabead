"""The emulated device's arrays behave as CuPy's where a GPU run would differ: implicit
conversion to NumPy and mixing with NumPy arrays are refused with CuPy's errors, and every
name the CUDA path takes from its array module or its arrays exists in CuPy."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpucnn
import gpucnn.backends.cuda as cuda_ops
from gpucnn import cuda, nn, optim
from gpucnn.backends import families
from gpucnn.backends.cuda import _kernels
from gpucnn.emulator import KernelError

IMPLICIT = "Implicit conversion to a NumPy array is not allowed"


@pytest.fixture
def emulator(monkeypatch):
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")


def device(a):
    return cuda.to_device(np.asarray(a), "cuda")


@pytest.mark.parametrize("shape", [(), (1,), (2, 3)])
@pytest.mark.parametrize("convert", [np.asarray, np.array, np.asanyarray, np.ascontiguousarray,
                                     lambda a: np.testing.assert_allclose(a, 0.5),
                                     lambda a: np.testing.assert_array_equal(a, a)],
                         ids=["asarray", "array", "asanyarray", "ascontiguousarray", "assert_allclose",
                              "assert_array_equal"])
def test_implicit_conversion_to_numpy_is_refused(emulator, shape, convert):
    with pytest.raises(TypeError, match=IMPLICIT):
        convert(device(np.full(shape, 0.5)))


@pytest.mark.parametrize("mix", [
    lambda d, h: d + h, lambda d, h: h * d, lambda d, h: np.maximum(d, h), lambda d, h: np.where(d > 0, h, d),
    lambda d, h: np.stack([d, h]), lambda d, h: cuda.get_array_module(d).where(h > 0, d, 0),
    lambda d, h: d.clip(h, None),
], ids=["add", "rmul", "ufunc", "where", "stack", "xp.where", "method"])
def test_numpy_arrays_mixed_into_device_ops_are_refused(emulator, mix):
    d, h = device(np.ones(3)), np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        mix(d, h)


def test_numpy_data_enters_where_cupy_copies_it(emulator):
    """cupy.asarray, an index array, a scalar or 0-d fill, a comparison with a 0-d array (CuPy
    takes its value) and assignment through an index array take NumPy data; assignment of a
    NumPy array or a list through plain indices does not."""
    a = device(np.zeros((2, 3)))
    xp = cuda.get_array_module(a)
    a[0] = xp.asarray(np.arange(3.0))
    a[1] = np.float32(5)
    a[1, 0] = np.array(7.0)
    a[np.array([1]), :2] = np.ones((1, 2))
    assert bool((a >= np.array(1.0)).any()) and cuda.device_of(a[np.array([0, 1])]) == "cuda"
    np.testing.assert_array_equal(cuda.as_numpy(a), [[0, 1, 2], [1, 1, 5]])
    for value in (np.ones(3), [1.0, 2.0, 3.0]):
        with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
            a[1] = value


def test_conversions_cupy_makes_through_a_host_copy_work(emulator):
    a = device(np.arange(6.0).reshape(2, 3))
    total = a.sum()
    assert cuda.device_of(total) == "cuda" and total.shape == ()  # a 0-d device array, not a NumPy scalar
    assert float(total) == 15.0 and int(a[1, 2]) == 5 and bool(a[0, 1]) and f"{a[1, 0]:.1f}" == "3.0"
    assert a[1, 2].item() == 5.0 and a.tolist() == [[0, 1, 2], [3, 4, 5]] and len(a) == 2
    assert repr(a) == repr(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="only 0-dimensional arrays"):  # NumPy's rule, which CuPy applies
        float(a[0, :1])
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):  # CuPy has no __index__
        range(a[1, 2].astype(np.int64))
    rows = list(a)
    assert len(rows) == 2 and all(cuda.device_of(r) == "cuda" for r in rows)
    with pytest.raises(TypeError, match="iteration over a 0-d array"):
        iter(total)


def test_numpy_and_the_array_module_keep_results_on_the_device(emulator):
    a = device(np.arange(6.0).reshape(2, 3))
    xp = cuda.get_array_module(a)
    results = [np.exp(a), np.where(a > 2, a, 0), np.stack([a, a]), xp.zeros(3), xp.arange(4), a.T, a[0],
               a[np.array([1, 0])], xp.asarray(np.ones(2)), a.max(axis=1), a.astype(np.float32)]
    assert all(cuda.device_of(r) == "cuda" for r in results)
    b = a.copy()
    b += a
    b[0] = a[1]
    out = xp.zeros_like(a)
    assert np.maximum(a, b, out=out) is out
    np.testing.assert_array_equal(cuda.as_numpy(b), [[3, 4, 5], [6, 8, 10]])
    assert cuda.as_numpy(a) is cuda.memory(a) and type(cuda.memory(a)) is np.ndarray  # the explicit way out
    moved = cuda.to_device(a, "cpu")
    moved[0, 0] = 7
    assert float(a[0, 0]) == 0.0  # moving copies, as between host and GPU memory


def test_checking_mode_sees_a_kernel_read_device_memory_no_kernel_wrote(emulator, monkeypatch):
    """The kernels are given the device arrays' memory, which `_kernels.empty` marks unwritten."""
    monkeypatch.setenv("GPUCNN_EMULATOR_SANITIZE", "1")
    monkeypatch.setattr(_kernels, "_modules", {})  # built afresh, in the checking mode
    monkeypatch.setattr(_kernels, "_functions", {})
    unwritten = _kernels.empty((64,), np.float32, like=device(np.zeros(1, np.float32)))
    with pytest.raises(KernelError) as caught:
        cuda_ops.relu_forward(unwritten)
    assert caught.value.check == "uninitialized"
    cuda_ops.relu_forward(device(np.zeros(64, np.float32)))


def representative_run():
    """Every call of every kernel family (`gpucnn.backends.families`), then every layer forward
    and backward, both losses with their options, and every optimizer step, on small float32
    and float64 inputs on the emulated device."""
    for family in families.FAMILIES:
        gpucnn.set_float32_matmul_precision(family.precision)
        try:
            for call in family.calls():
                call.run(cuda_ops, *(device(a) for a in call.inputs))
        finally:
            gpucnn.set_float32_matmul_precision("highest")
    rng = np.random.default_rng(0)
    nn.manual_seed(0)
    for dtype in (np.float32, np.float64):
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding="same", groups=2), nn.GELU())),
            nn.LeakyReLU(), nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Dropout(0.2),
            nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 5), nn.Sigmoid(),
        ).to("cuda")
        line = nn.Sequential(nn.Conv1d(2, 3, 3, stride=2), nn.MaxPool1d(2), nn.AvgPool1d(1)).to("cuda")
        if dtype == np.float64:
            model, line = model.double(), line.double()
        x = device(rng.standard_normal((4, 3, 8, 8)).astype(dtype))
        target = device(np.array([0, 4, -100, 2]))
        losses = [nn.CrossEntropyLoss(device(np.linspace(0.5, 1.5, 5).astype(dtype)), label_smoothing=0.1),
                  nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss(reduction="none", validate_args=False)]
        for opt in (optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                    optim.Adam(model.parameters(), amsgrad=True), optim.AdamW(model.parameters())):
            for crit in losses:
                opt.zero_grad()
                loss = crit(model(x), target)
                model.backward(crit.backward(device(np.ones(4, dtype)) if crit.reduction == "none" else 1.0))
                opt.step()
            opt.load_state_dict(opt.state_dict())
        model.load_state_dict(model.state_dict())
        mse = nn.MSELoss()
        y = line(device(rng.standard_normal((2, 2, 9)).astype(dtype)))
        mse(y, y * 0.5)
        line.backward(mse.backward())
        model.eval()
        cuda.scalars([loss.sum(), model(x).sum()])


def recorded_names(monkeypatch):
    """{"module": xp names, "ndarray": array attributes, "numpy": NumPy functions and ufuncs
    reached through device arrays}, each {name: sorted keyword arguments}, from one
    representative_run."""
    seen = {"module": {}, "ndarray": {}, "numpy": {}}

    def note(kind, name, kwargs=()):
        seen[kind].setdefault(name, set()).update(kwargs)

    def recording(kind, getattr_):
        def hook(self, name):
            attribute = getattr_(self, name)
            if not callable(attribute) or isinstance(attribute, (type, np.ufunc)):
                note(kind, name)
                return attribute

            def call(*args, **kwargs):
                note(kind, name, kwargs)
                return attribute(*args, **kwargs)
            return call
        return hook

    module, array = type(cuda.emulated_cupy), cuda.EmulatedDeviceArray
    array_ufunc, array_function = array.__array_ufunc__, array.__array_function__

    def ufunc_hook(self, ufunc, method, *inputs, **kwargs):
        note("numpy", ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}", kwargs)
        return array_ufunc(self, ufunc, method, *inputs, **kwargs)

    def function_hook(self, func, types, args, kwargs):
        note("numpy", ".".join(func.__module__.split(".")[1:] + [func.__name__]), kwargs)
        return array_function(self, func, types, args, kwargs)

    monkeypatch.setattr(module, "__getattr__", recording("module", module.__getattr__))
    monkeypatch.setattr(array, "__getattr__", recording("ndarray", array.__getattr__))
    monkeypatch.setattr(array, "__array_ufunc__", ufunc_hook)
    monkeypatch.setattr(array, "__array_function__", function_hook)
    representative_run()
    return {kind: {name: sorted(kwargs) for name, kwargs in names.items()} for kind, names in seen.items()}


def cupy_python():
    """(python, environment) that can import the real CuPy: this one where CuPy is installed,
    else this one with the folder that `make test` installs CuPy's wheel into (CuPy imports
    without a GPU or driver; a folder of its own keeps it from the rest of the suite)."""
    env = dict(os.environ)
    if subprocess.run([sys.executable, "-c", "import cupy"], capture_output=True).returncode == 0:
        return sys.executable, env
    folder = Path(os.environ.get("GPUCNN_CUPY_API", Path(sys.prefix) / "cupy-api"))
    if not (folder / "cupy").is_dir():
        pytest.fail(f"CuPy is not installed, nor its API in {folder}: run `make test`, or pip install --no-deps "
                    f"--target {folder} cupy-cuda12x cuda-pathfinder")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    return sys.executable, env


# Runs under the real CuPy: reads recorded_names() as JSON, prints what CuPy lacks.
CHECK_IN_CUPY = r'''
import functools, inspect, json, sys
import cupy

def takes(obj, kwargs):
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # a compiled function without a signature: names only
        return []
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return []
    names = {p.name for p in parameters}
    return [k for k in kwargs if k not in names]

def find(root, dotted):
    try:
        return functools.reduce(getattr, dotted.split("."), root)
    except AttributeError:
        return None

names, missing = json.load(sys.stdin), []
print(cupy.__version__)
for kind, root in (("module", cupy), ("ndarray", cupy.ndarray), ("numpy", cupy)):
    for name, kwargs in names[kind].items():
        obj = find(root, name)
        if obj is None:
            missing.append(f"{kind}: {name}")
        elif not isinstance(obj, (type, cupy.ufunc)) and takes(obj, kwargs):
            missing.append(f"{kind}: {name}({', '.join(k + '=' for k in takes(obj, kwargs))})")
print(json.dumps(missing))
'''


def test_every_name_the_emulated_cuda_path_uses_exists_in_cupy(emulator, monkeypatch):
    names = recorded_names(monkeypatch)
    # The run reached the array module, array methods and NumPy's functions and ufuncs.
    assert {"zeros_like", "empty"} <= names["module"].keys() and "reshape" in names["ndarray"]
    assert {"exp", "multiply"} <= names["numpy"].keys()
    python, env = cupy_python()
    done = subprocess.run([python, "-c", CHECK_IN_CUPY], input=json.dumps(names), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    version, missing = done.stdout.splitlines()[-2:]
    assert json.loads(missing) == [], f"CuPy {version} lacks what the emulated CUDA path uses"


def test_the_checker_reports_names_cupy_lacks():
    python, env = cupy_python()
    names = {"module": {"zeros_like": ["shape"], "no_such_function": []}, "ndarray": {"ctypes": [], "sum": ["axis"]},
             "numpy": {"exp": [], "add.at": [], "zeros_like": ["no_such_keyword"]}}
    done = subprocess.run([python, "-c", CHECK_IN_CUPY], input=json.dumps(names), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [
        "module: no_such_function", "ndarray: ctypes", "numpy: zeros_like(no_such_keyword=)"]
