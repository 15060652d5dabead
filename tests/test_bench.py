"""The benchmark runs end to end (so it cannot rot)."""
import json
import os

import numpy as np
import pytest

import gpucnn
from gpucnn.backends.cpu import _common as cpu_common
from gpucnn.bench import cases
from gpucnn.bench.__main__ import contestants, main

SMALL = ["--only", "lenet.conv2,lenet5.b128", "--repeat", "1", "--warmup", "0", "--threads", "2"]


def _run(tmp_path, *extra):
    path = tmp_path / "bench.json"
    assert main(SMALL + ["--json", str(path), *extra]) == 0
    return json.loads(path.read_text())


def test_bench_against_torch_writes_tables_and_same_losses(tmp_path, capsys):
    pytest.importorskip("torch")
    result = _run(tmp_path)
    out = capsys.readouterr().out
    assert "| lenet.conv2 " in out and "| lenet5.b128 " in out
    (run,) = result["runs"]
    layers = run["layers"]
    assert [(r["case"], r["op"]) for r in layers] == [
        (case, op) for case in ("lenet.conv2", "lenet.conv2.b1")
        for op in ("forward", "backward_data", "backward_weight", "forward+backward")]
    for r in layers:
        assert r["ratio"]["torch"] == pytest.approx(r["ms"]["gpucnn"] / r["ms"]["torch"])
        batch = 128 if r["case"] == "lenet.conv2" else 1
        ops = 3 if r["op"] == "forward+backward" else 1
        assert r["flops"] == ops * 2 * batch * 16 * 10 * 10 * 6 * 5 * 5  # N * O * OH * OW * C * KH * KW
    (train,) = run["training"]
    assert train["case"] == "lenet5.b128" and train["losses_agree"]
    assert train["images_per_s"]["torch"] == pytest.approx(128e3 / train["ms"]["torch"])
    assert result["machine"]["torch"] and run["threads"] == 2 and result["machine"]["threads"] == [2]
    assert "2 threads: geometric mean of gpucnn/torch over 2 layers (forward+backward) and 1 training steps: " in out


@pytest.mark.parametrize("name", ["mobilenet.dw3", "mobilenet.dw3s2", "resnext.g32", "deeplab.d2"])
def test_grouped_and_dilated_cases_time_the_same_convolution_in_both(name):
    """A case's groups and dilation reach both contestants' ops, and its shapes and FLOPs are theirs."""
    pytest.importorskip("torch")
    from dataclasses import replace
    from gpucnn.bench.rivals import Gpucnn, Torch
    (case,) = [c for c in cases.LAYERS if c.name == name]
    case = replace(case, N=2, H=9, W=9)  # small, odd sizes: the same options
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.N, case.C, case.H, case.W)).astype(np.float32)
    w, b = rng.standard_normal(case.w_shape).astype(np.float32), rng.standard_normal(case.O).astype(np.float32)
    dy = rng.standard_normal((case.N, case.O) + case.out_hw).astype(np.float32)
    ours, theirs = Gpucnn("cpu").conv(case, x, w, b, dy), Torch("cpu").conv(case, x, w, b, dy)
    for op in ours:
        np.testing.assert_allclose(np.asarray(ours[op]()), theirs[op]().numpy(), rtol=1e-4, atol=1e-4, err_msg=op)
    OH, OW = case.out_hw
    assert case.flops() == 2 * case.N * case.O * OH * OW * (case.C // case.groups) * 9


def test_every_round_is_kept_and_the_medians_are_theirs(tmp_path):
    path = tmp_path / "bench.json"
    assert main(["--only", "lenet.conv2.b1,lenet5.b128", "--repeat", "3", "--warmup", "0", "--no-torch",
                 "--threads", "2", "--json", str(path)]) == 0
    (run,) = json.loads(path.read_text())["runs"]
    for r in run["layers"] + run["training"]:
        wall, cpu_time = r["samples_ms"]["gpucnn"], r["cpu_samples_ms"]["gpucnn"]
        assert len(wall) == len(cpu_time) == 3 and all(t > 0 for t in wall + cpu_time)
        assert r["ms"]["gpucnn"] == pytest.approx(sorted(wall)[1])
    by_op = {r["op"]: r["samples_ms"]["gpucnn"] for r in run["layers"]}
    # forward+backward is each round's three ops added up
    assert by_op["forward+backward"] == pytest.approx([sum(t) for t in zip(
        by_op["forward"], by_op["backward_data"], by_op["backward_weight"])])


def test_one_thread_runs_pinned_to_one_cpu_and_can_count_cpu_time(tmp_path, capsys):
    before = os.sched_getaffinity(0)
    result = _run(tmp_path, "--no-torch", "--threads", "1", "--clock", "cpu")
    (run,) = result["runs"]
    assert run["threads"] == 1 and "pinned to CPU" in run["thread_setup"]
    assert os.sched_getaffinity(0) == before  # given back afterwards
    assert result["machine"]["clock"] == "cpu"
    for r in run["layers"]:
        assert r["ms"]["gpucnn"] == pytest.approx(sorted(r["cpu_samples_ms"]["gpucnn"])[0])


def test_the_default_on_the_cpu_is_one_core_then_all(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_common, "_threads", 2)
    path = tmp_path / "bench.json"
    assert main(["--only", "lenet.conv2.b1", "--repeat", "1", "--warmup", "0", "--no-torch", "--json", str(path)]) == 0
    assert [run["threads"] for run in json.loads(path.read_text())["runs"]] == [1, 2]


def test_bench_without_torch_times_gpucnn_alone(tmp_path, capsys):
    result = _run(tmp_path, "--no-torch")
    assert "torch ms" not in capsys.readouterr().out
    (run,) = result["runs"]
    assert all(set(r["ms"]) == {"gpucnn"} and r["ratio"] == {} for r in run["layers"] + run["training"])
    assert result["machine"]["torch"] is None


@pytest.mark.parametrize("flags, want", [(["--repeat", "0"], "--repeat must be positive, got 0"),
                                         (["--warmup", "-1"], "--warmup must be non-negative, got -1"),
                                         (["--threads", "1,0"], "--threads must be positive, got 1,0"),
                                         (["--threads", "two"], "--threads must be comma-separated whole numbers"),
                                         (["--clock", "cpu"], "--clock cpu needs --threads 1"),
                                         (["--precision", "tf32"], "argument --precision: invalid choice: 'tf32'")])
def test_bad_round_counts_are_cli_errors(flags, want, capsys):
    with pytest.raises(SystemExit) as e:
        main(flags)
    assert e.value.code == 2 and want in capsys.readouterr().err


def test_an_only_that_matches_nothing_is_an_error():
    with pytest.raises(SystemExit) as e:
        main(["--only", "no-such-case", "--no-torch"])
    assert "--only 'no-such-case' matches no case; the cases are: lenet.conv1," in str(e.value.code)


def test_bench_on_device_cuda_runs_through_the_emulator(tmp_path, monkeypatch):
    """The GPU code path (device arrays, Module.to, its timer) runs without a GPU, on the kernel emulator."""
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    path = tmp_path / "bench.json"
    assert main(["--device", "cuda", "--no-torch", "--only", "lenet.conv2.b1,lenet5.b128", "--precision", "highest",
                 "--repeat", "1", "--warmup", "0", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["machine"]["device"] == "cuda" and "emulator" in result["machine"]["device_name"]
    assert result["machine"]["precisions"] == ["highest"]
    (run,) = result["runs"]
    assert run["precision"] == "highest" and run["torch_tf32"] is None
    assert len(run["layers"]) == 4 and run["training"][0]["losses"]["gpucnn"][0] > 0


def test_on_device_cuda_both_precisions_run_a_table_each(tmp_path, monkeypatch, capsys):
    """The emulator runs the TF32 kernels, so "high" really runs: its losses move off the
    strict ones by TF32's rounding, and the caller's own precision is back afterwards."""
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    monkeypatch.setattr(cases, "TRAINING", [cases.Train("tiny.b2", cases.lenet5, 2, 1, 28, 28)])
    path = tmp_path / "bench.json"
    assert main(["--device", "cuda", "--no-torch", "--only", "lenet.conv2.b1,tiny", "--repeat", "1",
                 "--warmup", "0", "--json", str(path)]) == 0  # --precision both is the default on a GPU
    out = capsys.readouterr().out
    assert gpucnn.get_float32_matmul_precision() == "highest"
    assert "precision: gpucnn set_float32_matmul_precision('highest')\n" in out
    assert "precision: gpucnn set_float32_matmul_precision('high')\n" in out
    result = json.loads(path.read_text())
    assert result["machine"]["precisions"] == ["highest", "high"]
    strict, fast = result["runs"]
    assert (strict["precision"], fast["precision"]) == ("highest", "high")
    assert [r["op"] for r in fast["layers"]] == ["forward", "backward_data", "backward_weight", "forward+backward"]
    strict_losses, fast_losses = (np.array(run["training"][0]["losses"]["gpucnn"]) for run in (strict, fast))
    assert not np.array_equal(strict_losses, fast_losses)
    np.testing.assert_allclose(fast_losses, strict_losses, rtol=1e-2)


def test_each_precision_meets_torch_in_its_matching_mode(monkeypatch):
    """On a GPU, gpucnn's "highest" against PyTorch with both TF32 switches off, "high" with
    both on (each contestant sets its switches before each of its timings)."""
    pytest.importorskip("torch")
    from types import SimpleNamespace
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    try:
        for precision, tf32 in (("highest", False), ("high", True), ("highest", False)):
            ours, theirs = contestants("cuda", precision, torch_ok=True)
            switches = SimpleNamespace(cudnn=SimpleNamespace(allow_tf32=None),
                                       cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=None)))
            theirs.torch = SimpleNamespace(backends=switches)
            theirs._precision()
            assert switches.cudnn.allow_tf32 is tf32 and switches.cuda.matmul.allow_tf32 is tf32
            seen = []
            ours.time(lambda: seen.append(gpucnn.get_float32_matmul_precision()))
            assert seen == [precision] and theirs.name == "torch"
    finally:
        gpucnn.set_float32_matmul_precision("highest")


def test_on_the_cpu_precision_changes_nothing_and_says_so(tmp_path, capsys):
    result = _run(tmp_path, "--no-torch", "--precision", "high")
    assert "no TF32 on the CPU for either library: --precision changes nothing here" in capsys.readouterr().out
    (run,) = result["runs"]
    assert run["precision"] is None and result["machine"]["precisions"] == [None]
    assert gpucnn.get_float32_matmul_precision() == "highest"


def test_batchnorm_layers_are_timed_beside_torch(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "bench.json"
    assert main(["--only", "resnet20.bn64", "--repeat", "1", "--warmup", "0", "--threads", "1",
                 "--json", str(path)]) == 0
    (run,) = json.loads(path.read_text())["runs"]
    assert [(r["case"], r["op"]) for r in run["layers"]] == [
        ("resnet20.bn64", op) for op in ("forward", "backward", "forward+backward")]
    assert all(r["ratio"]["torch"] > 0 and r["bytes"] > 0 for r in run["layers"])
