"""The training recipe's flags end to end on a few digits: warmup then cosine in the lr
column, augmentation and label smoothing that change training deterministically, and
kill-and-resume with all of them continuing exactly."""
import json
import math

import numpy as np
import pytest

from gpucnn import checkpoint
from test_train import assert_killed_run_resumes_exactly, metric_rows, run

SMALL = ["--limit-train", "96", "--limit-test", "32", "--batch-size", "16", "--device", "cpu"]
RECIPE = ["--augment", "--hflip", "--warmup", "1", "--nesterov", "--label-smoothing", "0.1"]


def lrs(out):
    return [float(r["lr"]) for r in metric_rows(out)]


def test_warmup_then_cosine(tmp_path):
    assert run(tmp_path, *SMALL, "--epochs", "4", "--warmup", "1", "--lr", "0.1") == 0
    want = [0.05, 0.1, 0.05 * (1 + math.cos(math.pi / 3)), 0.05 * (1 + math.cos(2 * math.pi / 3))]
    np.testing.assert_allclose(lrs(tmp_path), want, rtol=1e-5)


def test_the_default_schedule_is_cosine_over_the_epochs(tmp_path):
    assert run(tmp_path, *SMALL, "--epochs", "3", "--lr", "0.1") == 0
    np.testing.assert_allclose(lrs(tmp_path), [0.1 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)], rtol=1e-5)


def test_recipe_flags_change_training_deterministically_and_are_recorded(tmp_path):
    assert run(tmp_path / "plain", *SMALL, "--epochs", "2") == 0
    for name in ("a", "b"):
        assert run(tmp_path / name, *SMALL, "--epochs", "2", *RECIPE) == 0
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")
    assert metric_rows(tmp_path / "a")[0]["train_loss"] != metric_rows(tmp_path / "plain")[0]["train_loss"]
    assert run(tmp_path / "crop", *SMALL, "--epochs", "2", "--crop-padding", "1") == 0  # the crops alone, too
    assert metric_rows(tmp_path / "crop")[0]["train_loss"] != metric_rows(tmp_path / "plain")[0]["train_loss"]
    config = json.loads((tmp_path / "a" / "metrics.json").read_text())["config"]
    assert {k: config[k] for k in ("crop_padding", "hflip", "warmup", "nesterov", "label_smoothing")} == {
        "crop_padding": 1, "hflip": True, "warmup": 1, "nesterov": True, "label_smoothing": 0.1}


@pytest.mark.parametrize("flags", [
    RECIPE,
    ["--optimizer", "adamw", "--crop-padding", "2", "--schedule", "constant", "--warmup", "2"],
    ["--arch", "conv4k3p1bn res4 res6s2 gap drop0.3", "--hflip"],
], ids=["sgd-nesterov-augment-warmup", "adamw-crop-constant", "resnet-dropout"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, flags):
    assert_killed_run_resumes_exactly(tmp_path, monkeypatch, [*SMALL, "--epochs", "4", *flags])


def test_a_lengthened_run_follows_the_longer_schedule(tmp_path):
    flags = [*SMALL, "--warmup", "1", "--lr", "0.1"]
    assert run(tmp_path / "short", *flags, "--epochs", "2") == 0
    assert run(tmp_path / "short", "--resume", "--epochs", "4") == 0
    assert run(tmp_path / "long", *flags, "--epochs", "4") == 0
    assert lrs(tmp_path / "short")[2:] == lrs(tmp_path / "long")[2:]
    state = checkpoint.load_training_state(str(tmp_path / "short"))["states"]
    assert state["schedule"]["epochs"] == 4 and state["schedule"]["state"]["last_epoch"] == 4


@pytest.mark.parametrize("flags, message", [
    (["--optimizer", "adam", "--nesterov"], "--nesterov is a momentum of SGD, but --optimizer is adam"),
    (["--nesterov", "--momentum", "0"], "--nesterov needs a momentum, but --momentum is 0"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be between 0 and 1, but got 1.5"),
    (["--warmup", "30"], "--warmup must be non-negative and fewer than the --epochs (30), but got 30"),
    (["--epochs", "2", "--warmup", "-1"], "--warmup must be non-negative and fewer than the --epochs (2), but got -1"),
    (["--crop-padding", "-2"], "--crop-padding must be non-negative, but got -2"),
])
def test_bad_recipe_flags_are_one_line_cli_errors(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, *flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"gpucnn-train: error: {message}" in err and "Traceback" not in err
