"""The training command end to end on the embedded digits: outputs, PyTorch loading,
kill-and-resume, evaluate, predict, and the CUDA emulator."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from gpucnn import checkpoint, data, evaluate, predict, train

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("images_per_second", "seconds")


def run(out, *extra):
    return train.main(["--out", str(out), "--no-plots", *extra])


def metric_rows(out):
    with open(out / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Three epochs on all 1,437 training digits, with plots: about a second of training."""
    out = tmp_path_factory.mktemp("run")
    assert train.main(["--out", str(out), "--epochs", "3", "--device", "cpu"]) == 0
    return out


def test_short_run_learns_and_leaves_metrics_plots_checkpoint(short_run):
    rows = metric_rows(short_run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    summary = json.loads((short_run / "metrics.json").read_text())
    assert summary["test_accuracy"] == float(rows[-1]["test_accuracy"]) > 0.8
    assert summary["test_images"] == 360 and summary["device"] == "cpu"
    for name in train.PLOTS:
        assert (short_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(short_run / "checkpoints") == ["epoch-0003"]


def test_pytorch_loads_the_weights_and_computes_the_same_logits(short_run):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    model, config = evaluate.load_trained(str(short_run), "cpu")
    equivalents = {"Conv2d": lambda m: torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding),
                   "ReLU": lambda m: torch.nn.ReLU(), "MaxPool2d": lambda m: torch.nn.MaxPool2d(m.kernel_size, m.stride),
                   "Flatten": lambda m: torch.nn.Flatten(), "Linear": lambda m: torch.nn.Linear(m.in_features, m.out_features)}
    twin = torch.nn.Sequential(*[equivalents[type(m).__name__](m) for m in model])
    twin.load_state_dict(load_file(str(short_run / "checkpoints" / "epoch-0003" / "model.safetensors")), strict=True)
    x = data.normalize(data.load("digits").x_test[:16], config["max_value"], config["mean"], config["std"])
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-4)


def test_readme_pytorch_example_preprocesses_like_training(short_run):
    """The README's PyTorch snippet, run on this run's checkpoint, gives gpucnn's logits."""
    pytest.importorskip("torch")
    import re

    code = re.search(r"The weights load into PyTorch.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[1]
    checkpoint_file = Path(checkpoint.latest(str(short_run))) / checkpoint.MODEL_FILE
    code = re.sub(r'path = ".*?"', f"path = {str(checkpoint_file)!r}", code)
    scope = {}
    exec(compile(code, "README PyTorch example", "exec"), scope)
    model, config = evaluate.load_trained(str(short_run), "cpu")
    images = data.load("digits").x_test[:64]
    expected = evaluate.predictions(model, images, config, 64, "cpu")
    with scope["torch"].no_grad():
        logits = scope["net"](scope["preprocess"](images)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


class Killed(BaseException):
    """Stands for the process dying during an epoch."""


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    flags = ["--epochs", "3", "--limit-train", "256", "--limit-test", "64", "--optimizer", "adam", "--seed", "5"]
    assert_killed_run_resumes_exactly(tmp_path, monkeypatch, flags)


def assert_killed_run_resumes_exactly(tmp_path, monkeypatch, flags):
    """A run with `flags` killed in its third epoch, then resumed, ends as one never stopped."""
    assert run(tmp_path / "whole", *flags) == 0

    real_epoch, calls = train.run_epoch, []

    def dies_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "run_epoch", dies_in_epoch_3)
    with pytest.raises(Killed):
        run(tmp_path / "killed", *flags)
    monkeypatch.undo()
    assert len(metric_rows(tmp_path / "killed")) == 2  # epochs 1 and 2 kept, epoch 3 lost
    assert run(tmp_path / "killed", "--resume") == 0
    assert metric_rows(tmp_path / "killed") == metric_rows(tmp_path / "whole")
    whole, _ = checkpoint.load_model(str(tmp_path / "whole"))
    resumed, _ = checkpoint.load_model(str(tmp_path / "killed"))
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name])


def test_resume_can_extend_a_finished_run(tmp_path, capsys):
    assert run(tmp_path, "--epochs", "1", "--limit-train", "64", "--limit-test", "32") == 0
    assert run(tmp_path, "--resume", "--epochs", "2") == 0
    assert [r["epoch"] for r in metric_rows(tmp_path)] == ["1", "2"]
    assert "resuming at epoch 2 of 2" in capsys.readouterr().out


def test_evaluate_reports_the_run_accuracy(short_run, capsys):
    assert evaluate.main([str(short_run), "--device", "cpu"]) == 0
    accuracy = json.loads((short_run / "metrics.json").read_text())["test_accuracy"]
    assert f"accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out


def test_predict_matches_the_model_on_a_test_digit(short_run, tmp_path, capsys):
    from PIL import Image

    model, config = evaluate.load_trained(str(short_run), "cpu")
    ds = data.load("digits")
    digit = ds.x_test[0, 0]
    expected = config["classes"][int(evaluate.predictions(model, ds.x_test[:1], config, 1, "cpu").argmax())]
    big = np.kron(digit.astype(np.float64) * 255 / 16, np.ones((4, 4))).round().astype(np.uint8)  # 32x32
    Image.fromarray(big).save(tmp_path / "light_on_dark.png")
    Image.fromarray(255 - big).convert("RGB").save(tmp_path / "dark_on_light.jpg", quality=95)
    paths = [str(tmp_path / "light_on_dark.png"), str(tmp_path / "dark_on_light.jpg")]
    assert predict.main([str(short_run), *paths, "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [expected, expected]


@pytest.mark.parametrize("ink", [0, 255], ids=["black-strokes", "white-strokes"])
def test_predict_fills_a_transparent_ground_to_contrast_with_the_strokes(short_run, tmp_path, ink):
    from PIL import Image

    _, config = evaluate.load_trained(str(short_run), "cpu")
    digit = data.load("digits").x_test[0, 0]
    coverage = np.kron(digit.astype(np.float64) * 255 / 16, np.ones((4, 4))).round().astype(np.uint8)
    Image.fromarray(coverage).save(tmp_path / "light_on_dark.png")
    rgba = np.zeros((32, 32, 4), np.uint8)  # strokes of one colour; the ground transparent (and black below)
    rgba[..., :3], rgba[..., 3] = ink, coverage
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    expected = predict.load_image(str(tmp_path / "light_on_dark.png"), config)
    assert expected.max() > 0
    np.testing.assert_allclose(predict.load_image(str(tmp_path / "transparent.png"), config), expected, atol=0.2)


def test_bad_inputs_are_clear_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--arch", "conv6k9")
    assert e.value.code == 2 and "arch: 'conv6k9' (layer 1 of the spec) leaves no output" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path / "nothing", "--resume")
    assert "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path, "--resume", "--lr=0.5", "--arch", "lenet5")
    assert "--arch, --lr cannot change them" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path, "--dataset", "mnist")
    assert "pass --data-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main([str(tmp_path), str(tmp_path / "missing.png")])
    assert "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path), "--batch-size", "0"])
    assert "--batch-size must be positive, but got 0" in capsys.readouterr().err


def test_resuming_from_a_foreign_training_state_is_a_clear_cli_error(tmp_path, capsys):
    flags = ["--epochs", "1", "--limit-train", "32", "--limit-test", "16"]
    assert run(tmp_path / "cnn", *flags) == 0
    assert run(tmp_path / "mlp", *flags, "--arch", "fc16") == 0
    state = Path(checkpoint.latest(str(tmp_path / "mlp"))) / checkpoint.STATE_FILE
    (Path(checkpoint.latest(str(tmp_path / "cnn"))) / checkpoint.STATE_FILE).write_bytes(state.read_bytes())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run(tmp_path / "cnn", "--resume", "--epochs", "2")
    assert e.value.code == 2 and "does not belong to the model.safetensors beside it" in capsys.readouterr().err


def test_a_net_without_convolutions_plots_its_curves_only(tmp_path, capsys):
    """No convolution, so no filters or feature maps to draw: the run still ends cleanly."""
    assert train.main(["--out", str(tmp_path), "--arch", "fc16", "--epochs", "1", "--limit-train", "64",
                       "--limit-test", "32"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["curves.png"]
    assert "wrote metrics.csv, metrics.json, curves.png in" in capsys.readouterr().out


def test_short_run_on_the_cuda_emulator(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    flags = ["--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "16", "--seed", "1"]
    assert run(tmp_path / "emulated", *flags, "--device", "cuda") == 0
    assert run(tmp_path / "numpy", *flags, "--device", "cpu") == 0
    emulated, numpy_rows = metric_rows(tmp_path / "emulated"), metric_rows(tmp_path / "numpy")
    assert json.loads((tmp_path / "emulated" / "metrics.json").read_text())["device"] == "cuda"
    for key in ("train_loss", "test_loss"):
        assert float(emulated[0][key]) == pytest.approx(float(numpy_rows[0][key]), rel=1e-3)


class Transfers:
    """Counts what would make the host wait for a GPU: reading a device array back, whole
    (cuda.as_numpy) or as a Python number (float, int, bool, .item(), printing). On the
    emulator, a device array is EmulatedDeviceArray: its conversions are patched to count."""

    HOOKS = ("__float__", "__int__", "__bool__", "item", "tolist", "__format__", "__repr__", "__str__")

    def __init__(self, monkeypatch):
        from gpucnn import cuda
        self.outside_reports, self.in_reports, self.reports = [], 0, 0
        reporting = [False]

        def count(what):
            if reporting[0]:
                self.in_reports += 1
            else:
                self.outside_reports.append(what)

        for name in self.HOOKS:
            def hook(array, *args, _name=name):
                count(_name)
                return getattr(cuda.memory(array), _name)(*args)
            monkeypatch.setattr(cuda.EmulatedDeviceArray, name, hook, raising=False)
        real_as_numpy = cuda.as_numpy

        def as_numpy(x):
            if cuda.is_cuda_array(x):
                count("as_numpy")
            return real_as_numpy(x)
        monkeypatch.setattr(cuda, "as_numpy", as_numpy)
        real_settle = train.Report.settle

        def settle(report):
            self.reports += 1
            reporting[0] = True
            try:
                return real_settle(report)
            finally:
                reporting[0] = False
        monkeypatch.setattr(train.Report, "settle", settle)


def epoch_on_the_emulator(monkeypatch, optimizer, report_every, count=False):
    """((mean loss, accuracy), weights) of one epoch of 7 steps of a small net with every kind
    of layer; with count, also the Transfers it made."""
    from gpucnn import arch, cuda, recipe
    from gpucnn.nn.init import manual_seed
    digits = data.load("digits")
    config = {"batch_size": 16, "max_value": 16, "mean": [0.3], "std": [0.4], "label_smoothing": 0.1,
              "optimizer": optimizer, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3}
    with monkeypatch.context() as m:
        m.setenv("GPUCNN_CUDA_EMULATOR", "1")
        m.setattr(train, "REPORT_EVERY", report_every)
        manual_seed(0)
        model = arch.build_model("conv4k3p1bn pool2 drop0.2 fc16", (1, 8, 8), 10).to("cuda")
        opt, criterion = recipe.make_optimizer(config, model.parameters()), recipe.make_criterion(config)
        transfers = Transfers(m) if count else None
        result = train.run_epoch(model, criterion, opt, digits.x_train[:100], digits.y_train[:100], config,
                                 np.random.default_rng(0), "cuda", desc="epoch 1/1")
    return result, [cuda.as_numpy(p.data) for p in model.parameters()], transfers


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_steps_wait_for_the_device_only_at_reports(monkeypatch, optimizer):
    """The loss stays on the device: an epoch of 7 steps reporting every 3 reads the device
    back at its 3 reports only (after batches 3, 6 and 7), one transfer for the losses and one
    for the correct counts each, and its numbers are those of an epoch reporting every step."""
    result, weights, transfers = epoch_on_the_emulator(monkeypatch, optimizer, 3, count=True)
    assert transfers.outside_reports == [] and transfers.reports == 3 and transfers.in_reports == 2 * 3
    every_step, every_step_weights, _ = epoch_on_the_emulator(monkeypatch, optimizer, 1)
    assert result == every_step
    for got, want in zip(weights, every_step_weights):
        np.testing.assert_array_equal(got, want)
