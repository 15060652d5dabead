"""The CUDA backend's host path on a GPU, run against a stand-in CuPy (cupy_standin.py) of
each version whose behaviour differs: one RawKernel per kernel instance, compiled modules
cached on disk across processes, the one-line errors for an old driver and a kernel NVRTC
refuses, and no device readback in the bench's training step or evaluate's batches."""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cupy_standin
from gpucnn import cuda, evaluate, nn, predict, train
from gpucnn.backends.cuda import _kernels, _module_cache, launch

OWN_CACHE = ["13.6.0", "14.0.0", "14.1.0"]  # CuPy versions that never read their cache back for name_expressions


@pytest.fixture
def gpu(monkeypatch, tmp_path):
    """A fresh process's module tables and an empty kernel cache; install a stand-in with gpu(version)."""
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)
    monkeypatch.setenv("GPUCNN_CUDA_CACHE", str(tmp_path / "cache"))
    fresh_process(monkeypatch)
    return lambda version="14.2.0", **settings: cupy_standin.install(monkeypatch, version, **settings)


def fresh_process(monkeypatch):
    monkeypatch.setattr(_kernels, "_modules", {})
    monkeypatch.setattr(_kernels, "_functions", {})


def relu(dtype=np.float32, n=10):
    _kernels.launch_kernel("relu_forward", launch.elementwise(n), np.zeros(1, dtype), ())


def load(source="template <typename T> __global__ void k() {}", options=("-std=c++17",), names=("k<float>", "k<double>")):
    return _module_cache.load("k.cu", source, options, names)


def cache_files():
    return sorted(p.name for p in Path(os.environ["GPUCNN_CUDA_CACHE"]).iterdir())


@pytest.mark.parametrize("version", OWN_CACHE + ["14.2.0"])
def test_one_rawkernel_per_instance_however_many_launches(gpu, version):
    cupy = gpu(version)
    for _ in range(50):
        relu(np.float32)
        relu(np.float64)
        _kernels.launch_kernel("conv2d_forward", launch.conv2d_forward(2, 64, 8, 8), np.zeros(1, np.float32), ())
        _kernels.launch_kernel("conv2d_forward", launch.conv2d_forward(2, 4, 8, 8), np.zeros(1, np.float32), ())
    assert cupy.get_function_calls == 4
    assert len(cupy.launches) == 200
    assert {name for name, *_ in cupy.launches} == {
        cupy_standin.lowered("relu_forward<float>"), cupy_standin.lowered("relu_forward<double>"),
        cupy_standin.lowered(f"conv2d_forward<float, {launch.conv2d_forward(2, 64, 8, 8).tile.template_args}>"),
        cupy_standin.lowered(f"conv2d_forward<float, {launch.conv2d_forward(2, 4, 8, 8).tile.template_args}>")}
    assert len(cupy.compiles) == 2  # activation.cu and conv2d.cu, once each


@pytest.mark.parametrize("version", OWN_CACHE)
def test_gpus_of_two_archs_in_one_process_get_a_binary_each(gpu, version):
    cupy = gpu(version, devices=2)
    relu()
    cupy.device, cupy.arch = 1, "80"
    relu()
    relu()
    assert [options[-1] for _, options, _ in cupy.compiles] == ["-arch=sm_90", "-arch=sm_80"]
    assert cupy.get_function_calls == 2 and len(cupy.launches) == 3


@pytest.mark.parametrize("version", OWN_CACHE)
def test_a_new_process_loads_the_module_from_disk(gpu, monkeypatch, version):
    first = gpu(version)
    relu()
    assert len(first.compiles) == 1 and len(first.loaded_files) == 1  # compiled, then loaded from the file it wrote
    assert len(cache_files()) == 2
    fresh_process(monkeypatch)
    second = gpu(version)
    relu(np.float64)
    assert second.compiles == []
    assert len(second.loaded_files) == 1 and not second.code_modules
    # CuPy's own options, in CuPy's order: ours, its C++ dialect and include folder, -ftz=true,
    # the runtime wheel's headers where that version adds them, then the -arch NVRTC needs.
    options = first.compiles[0][1]
    assert options[:len(_kernels.KERNEL_OPTIONS)] == _kernels.KERNEL_OPTIONS
    assert options[len(_kernels.KERNEL_OPTIONS):] == (
        "-I/standin/cupy/_core/include", "-ftz=true",
        *(("-I/standin/nvidia/cuda_runtime/include",) if version != "14.1.0" else ()), "-arch=sm_90")


def test_another_process_reads_the_cache(gpu, tmp_path):
    """A real second process, which imports the stand-in itself."""
    gpu("13.6.0")
    relu()
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import cupy_standin; "
              "s = cupy_standin.StandIn('13.6.0'); sys.modules.update(s.modules()); "
              "import numpy as np; from gpucnn.backends.cuda import _kernels, launch; "
              "_kernels.launch_kernel('relu_forward', launch.elementwise(4), np.zeros(1, np.float32), ()); "
              "print(len(s.compiles), len(s.loaded_files), len(s.launches))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "1"]


@pytest.mark.parametrize("change", [
    dict(source="template <typename T> __global__ void k() { }"),
    dict(options=("-std=c++17", "--fmad=true")),
    dict(names=("k<float>",)),
    dict(arch="80"),
    dict(nvrtc=(13, 0)),
    dict(version="13.5.0"),
], ids=["source", "options", "name_expressions", "arch", "nvrtc", "cupy"])
def test_the_cache_key_covers_what_shapes_the_binary(gpu, monkeypatch, change):
    gpu("13.6.0")
    load()
    settings = {k: change[k] for k in ("arch", "nvrtc") if k in change}
    arguments = {k: change[k] for k in ("source", "options", "names") if k in change}
    fresh_process(monkeypatch)
    again = gpu(change.get("version", "13.6.0"), **settings)
    load(**arguments)
    assert len(again.compiles) == 1
    assert len(cache_files()) == 4
    fresh_process(monkeypatch)
    third = gpu(change.get("version", "13.6.0"), **settings)
    load(**arguments)
    assert third.compiles == []


@pytest.mark.parametrize("damage", ["truncate binary", "other binary", "garble index", "drop binary",
                                    "index lacks a name"])
def test_a_damaged_cache_entry_is_rebuilt_not_loaded(gpu, monkeypatch, damage):
    gpu("14.0.0")
    load()
    folder = Path(os.environ["GPUCNN_CUDA_CACHE"])
    binary, = folder.glob("*.cubin")
    index, = folder.glob("*.json")
    if damage == "truncate binary":
        binary.write_bytes(binary.read_bytes()[:-5])
    elif damage == "other binary":
        binary.write_bytes(cupy_standin.BINARY_MAGIC + b'{"functions": []}')
    elif damage == "garble index":
        index.write_text(index.read_text()[:10])
    elif damage == "drop binary":
        binary.unlink()
    else:
        record = json.loads(index.read_text())
        record["names"].pop("k<double>")
        index.write_text(json.dumps(record))
    fresh_process(monkeypatch)
    again = gpu("14.0.0")
    module, names = load()
    assert len(again.compiles) == 1
    assert module.get_function(names["k<double>"])
    record = json.loads(index.read_text())
    assert record["sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    assert [p for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_cupy_14_2_compiles_and_caches_itself(gpu):
    cupy = gpu("14.2.0")
    module, names = load()
    assert [m.name_expressions for m in cupy.code_modules] == [("k<float>", "k<double>")]
    assert len(cupy.compiles) == 1  # at load, not at the first launch
    assert names == {"k<float>": "k<float>", "k<double>": "k<double>"}
    assert not Path(os.environ["GPUCNN_CUDA_CACHE"]).exists() or cache_files() == []


@pytest.mark.parametrize("version", ["13.6.0", "14.2.0"])
def test_a_compile_failure_is_one_line_with_the_log_kept(gpu, version):
    gpu(version, arch="86")
    source = "template <typename T> __global__ void k() {}\n\n#error no mma here\n"
    with pytest.raises(_module_cache.CompileError) as info:
        load(source=source)
    message = str(info.value)
    log = Path(os.environ["GPUCNN_CUDA_CACHE"]) / "k-sm_86.log"
    assert message == (f'NVRTC could not compile k.cu for sm_86: kern.cu(3): error: #error directive: no mma here '
                       f'(whole log: {log})')
    assert "\n" not in message
    assert '1 error detected in the compilation of "kern.cu"' in log.read_text()
    assert isinstance(info.value, cuda.DeviceSetupError)


@pytest.mark.parametrize("settings, message", [
    (dict(driver=11080, runtime=12080, device_count_error=35),
     "device 'cuda' is not available: the NVIDIA driver supports CUDA 11.8, older than the CUDA 12.8 that CuPy "
     "is built for: upgrade the NVIDIA driver, or install the cupy wheel for your CUDA (cupy-cuda11x)"),
    (dict(driver=12090, runtime=13000, device_count_error=35),
     "device 'cuda' is not available: the NVIDIA driver supports CUDA 12.9, older than the CUDA 13.0 that CuPy "
     "is built for: upgrade the NVIDIA driver, or install the cupy wheel for your CUDA (cupy-cuda12x)"),
    (dict(driver=0, device_count_error=35),
     "device 'cuda' is not available: CuPy found no NVIDIA driver; set GPUCNN_CUDA_EMULATOR=1 to run the CUDA "
     "kernels on the CPU emulator"),
    (dict(device_count_error=100),
     "device 'cuda' is not available: CuPy found no GPU; set GPUCNN_CUDA_EMULATOR=1 to run the CUDA kernels "
     "on the CPU emulator"),
    (dict(devices=0), "device 'cuda' is not available: CuPy found no GPU; set GPUCNN_CUDA_EMULATOR=1 to run "
     "the CUDA kernels on the CPU emulator"),
], ids=["driver-11-cupy-12", "driver-12-cupy-13", "no-driver", "no-device", "zero-devices"])
def test_why_cuda_is_not_available(gpu, settings, message):
    gpu(**settings)
    assert not cuda.gpu_available() and cuda.default_device() == "cpu"
    with pytest.raises(cuda.DeviceSetupError) as info:
        cuda.check_device("cuda")
    assert str(info.value) == message


def test_an_older_driver_of_the_same_major_version_runs(gpu):
    """CUDA's minor version compatibility: CuPy built for 12.8 on a 12.2 driver."""
    gpu(driver=12020, runtime=12080)
    assert cuda.gpu_available()
    assert cuda.check_device("cuda") == "cuda"


@pytest.mark.parametrize("main, argv", [
    (train.main, ["--device", "cuda", "--epochs", "1"]),
    (evaluate.main, ["--device", "cuda", "missing-checkpoint"]),
    (predict.main, ["--device", "cuda", "missing-checkpoint", "image.png"]),
], ids=["train", "evaluate", "predict"])
def test_the_tools_say_an_old_driver_in_one_line(gpu, capsys, main, argv, tmp_path):
    gpu(driver=11080, runtime=12080, device_count_error=35)
    if main is train.main:
        argv = argv + ["--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "the NVIDIA driver supports CUDA 11.8" in err and "upgrade the NVIDIA driver" in err


def test_the_bench_says_an_old_driver_in_one_line(gpu):
    from gpucnn.bench.__main__ import main
    gpu(driver=12090, runtime=13000, device_count_error=35)
    with pytest.raises(SystemExit) as info:
        main(["--device", "cuda", "--quick"])
    assert info.value.code == ("python -m gpucnn.bench: error: device 'cuda' is not available: the NVIDIA driver "
                               "supports CUDA 12.9, older than the CUDA 13.0 that CuPy is built for: upgrade the "
                               "NVIDIA driver, or install the cupy wheel for your CUDA (cupy-cuda12x)")


def test_the_tools_say_a_compile_failure_in_one_line(gpu, monkeypatch, capsys, tmp_path):
    """A kernel module compiles at its first launch, inside the run: train, evaluate and
    predict report it as they report bad arguments."""
    gpu()
    failure = _module_cache.CompileError("NVRTC could not compile conv2d.cu for sm_90: conv2d.cu(3): error: x")
    monkeypatch.setattr(train, "train", lambda *a: (_ for _ in ()).throw(failure))
    monkeypatch.setattr(evaluate, "load_trained", lambda *a: (None, {"dataset": "digits", "in_shape": (1, 8, 8)}))
    monkeypatch.setattr(evaluate.data, "load_split", lambda *a: (np.zeros((1, 1, 8, 8), np.uint8), np.zeros(1, int)))
    monkeypatch.setattr(evaluate, "predictions", lambda *a, **k: (_ for _ in ()).throw(failure))
    monkeypatch.setattr(predict, "load_trained", lambda *a: (None, {}))
    monkeypatch.setattr(predict, "load_image", lambda *a: np.zeros((1, 8, 8), np.uint8))
    monkeypatch.setattr(predict, "predictions", lambda *a, **k: (_ for _ in ()).throw(failure))
    for main, argv in [(train.main, ["--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "run")]),
                       (evaluate.main, ["--device", "cuda", "run"]),
                       (predict.main, ["--device", "cuda", "run", "image.png"])]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.endswith(f"error: {failure}\n") and err.count("\n") == 1, err


class Readbacks:
    """Counts what would wait for the GPU: a conversion of a device array to a host value, or
    a boolean mask (whose result's size the host must learn)."""

    def __init__(self, monkeypatch):
        self.calls, self.inside = [], 0
        for name in ("as_numpy", "scalars"):
            original = getattr(cuda, name)
            monkeypatch.setattr(cuda, name, self.counting(name, original))
        array = cuda.EmulatedDeviceArray
        for name in ("__int__", "__float__", "__complex__", "__bool__", "__iter__", "__repr__", "__str__",
                     "__format__", "get"):
            monkeypatch.setattr(array, name, self.counting(name, getattr(array, name)))
        getattribute, getitem = array.__getattr__, array.__getitem__

        def attribute(a, name):
            if name in ("item", "tolist"):
                self.calls.append(name)
            return getattribute(a, name)

        monkeypatch.setattr(array, "__getattr__", attribute)

        def masked(a, key):
            keys = key if isinstance(key, tuple) else (key,)
            if any(getattr(k, "dtype", None) == np.bool_ for k in keys):
                self.calls.append("boolean mask")
            return getitem(a, key)

        monkeypatch.setattr(array, "__getitem__", masked)

    def counting(self, name, original):
        def counted(*args, **kwargs):
            # One transfer counts once (scalars calls as_numpy); to_device passes host arrays through as_numpy.
            if not self.inside and (name != "as_numpy" or cuda.is_cuda_array(args[0])):
                self.calls.append(name)
            self.inside += 1
            try:
                return original(*args, **kwargs)
            finally:
                self.inside -= 1
        return counted


def tiny(nn):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def test_the_bench_training_step_reads_nothing_back(monkeypatch):
    from gpucnn.bench.rivals import Gpucnn
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, size=8)
    step = Gpucnn("cuda").trainer(tiny, tiny(nn).state_dict(), x, y)
    readbacks = Readbacks(monkeypatch)
    for _ in range(3):
        loss = step()
    assert readbacks.calls == []
    assert isinstance(loss, cuda.EmulatedDeviceArray) and np.isfinite(cuda.as_numpy(loss))


def test_the_readback_counter_sees_the_validating_loss(monkeypatch):
    """The counter above can fail: a validating loss on device targets reads them back."""
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    logits = cuda.to_device(np.zeros((4, 3), np.float32), "cuda")
    target = cuda.to_device(np.array([0, 1, 2, 1]), "cuda")
    readbacks = Readbacks(monkeypatch)
    nn.CrossEntropyLoss()(logits, target)
    assert "boolean mask" in readbacks.calls


@pytest.mark.parametrize("images", [8, 32])
def test_evaluate_reads_back_once_however_many_batches(monkeypatch, images):
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    on_cpu = tiny(nn).eval()
    model = tiny(nn)
    model.load_state_dict(on_cpu.state_dict())
    model = model.to("cuda").eval()
    config = {"max_value": 255, "mean": [0.5], "std": [0.25], "classes": ["a", "b", "c"]}
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (images, 1, 4, 4), dtype=np.uint8), rng.integers(0, 3, images)
    readbacks = Readbacks(monkeypatch)
    logits, loss, accuracy = evaluate.predictions(model, x, config, 4, "cuda", labels=y)
    assert sorted(readbacks.calls) == ["as_numpy", "scalars"]  # the logits and the losses, once each
    assert type(logits) is np.ndarray and logits.shape == (images, 3)
    expected = evaluate.predictions(on_cpu, x, config, 4, "cpu", labels=y)
    np.testing.assert_allclose(logits, expected[0], rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(expected[1], rel=1e-5) and accuracy == expected[2]


def test_evaluate_checks_the_labels_on_the_host(monkeypatch):
    config = {"max_value": 255, "mean": [0.5], "std": [0.25], "classes": ["a", "b", "c"]}
    x, y = np.zeros((4, 1, 4, 4), np.uint8), np.array([0, 1, 3, 2])
    with pytest.raises(ValueError, match=re.escape("label 3 is out of range for the model's 3 classes")):
        evaluate.predictions(tiny(nn).eval(), x, config, 2, "cpu", labels=y)
