"""The run folder keeps finished work: no fresh run replaces one without --overwrite (and
then only after its first checkpoint), two runs never share a folder, a diverging run keeps
its last finite checkpoint, and failed saves leave no half-written files."""
import errno
import json
import math
import os
from pathlib import Path

import pytest

from gpucnn import checkpoint, recipe, runs, train

QUICK = ["--epochs", "2", "--limit-train", "64", "--limit-test", "32", "--no-plots"]


def cli(out, *flags):
    return train.main(["--out", str(out), *flags])


def cli_error(capsys, out, *flags, code=2):
    """Run the command expecting an error line (after argparse's usage, for a bad flag); returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli(out, *flags)
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert e.value.code == code and last.startswith("gpucnn-train: error: ") and "Traceback" not in err, err
    return last


def finished_run(out):
    assert cli(out, *QUICK) == 0
    return checkpoint.load_model(str(out))[0]


class Killed(BaseException):
    """Stands for the process dying."""


def test_a_fresh_run_never_replaces_a_finished_run_without_overwrite(tmp_path, capsys):
    weights = finished_run(tmp_path)
    err = cli_error(capsys, tmp_path, *QUICK, "--seed", "3")
    assert "holds a finished or interrupted run (checkpoint epoch-0002)" in err and "--overwrite" in err
    assert checkpoint.load_model(str(tmp_path))[0]["0.weight"].tobytes() == weights["0.weight"].tobytes()
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3


def test_overwrite_keeps_the_earlier_run_until_the_new_one_has_saved_an_epoch(tmp_path, monkeypatch):
    weights = finished_run(tmp_path)
    summary = (tmp_path / "metrics.json").read_text()
    monkeypatch.setattr(train, "run_epoch", lambda *a, **k: (_ for _ in ()).throw(Killed))
    with pytest.raises(Killed):  # killed in the new run's first epoch
        cli(tmp_path, *QUICK, "--seed", "3", "--overwrite")
    monkeypatch.undo()
    state = checkpoint.load_training_state(str(tmp_path))
    assert state["epoch"] == 2 and state["weights"]["0.weight"].tobytes() == weights["0.weight"].tobytes()
    assert (tmp_path / "metrics.json").read_text() == summary
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3

    assert cli(tmp_path, *QUICK[:1], "1", *QUICK[2:], "--seed", "3", "--overwrite") == 0
    assert os.listdir(tmp_path / "checkpoints") == ["epoch-0001"]
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["seed"] == 3
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2


def test_resume_and_overwrite_exclude_each_other(tmp_path, capsys):
    assert "not allowed with argument" in cli_error(capsys, tmp_path, "--resume", "--overwrite")


def test_each_spec_has_its_own_default_folder_and_is_recorded_without_stray_spaces():
    _, a = train.parse_args(["--arch", "conv4k3  fc8"])
    _, b = train.parse_args(["--arch", "fc8"])
    _, preset = train.parse_args([])
    assert a.out == os.path.join("runs", "digits-conv4k3_fc8") and b.out == os.path.join("runs", "digits-fc8")
    assert preset.out == os.path.join("runs", "digits-lenet5-3x3")
    assert train.fresh_config(a)["arch"] == "conv4k3 fc8"


def test_a_locked_run_folder_refuses_a_second_run(tmp_path, capsys):
    with runs.claim(str(tmp_path), resume=False, overwrite=False):
        err = cli_error(capsys, tmp_path, *QUICK)
    assert f"in use by another training run (pid {os.getpid()})" in err
    assert not (tmp_path / "metrics.csv").exists()
    assert cli(tmp_path, *QUICK) == 0  # released


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--momentum", "nan"),
                                         ("--weight-decay", "-inf"), ("--momentum", "-0.5")])
def test_settings_that_cannot_train_are_refused(tmp_path, capsys, flag, value):
    err = cli_error(capsys, tmp_path, f"{flag}={value}")
    assert flag in err and value in err
    assert not tmp_path.joinpath("metrics.csv").exists()


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(tmp_path, monkeypatch, capsys):
    real_schedule = recipe.schedule

    class Exploding:  # epoch 1 as scheduled, then a learning rate that overflows the weights
        def __init__(self, config, optimizer, resumed=None):
            self.optimizer, self.scheduler = optimizer, real_schedule(config, optimizer, resumed)

        def step(self):
            self.scheduler.step()
            self.optimizer.lr = 1e9

        def state_dict(self):
            return self.scheduler.state_dict()

    monkeypatch.setattr(recipe, "schedule", Exploding)
    err = cli_error(capsys, tmp_path, *QUICK[:1], "3", *QUICK[2:], "--schedule", "constant", code=1)
    assert "loss became" in err and "epoch 2/3" in err and "try a smaller --lr" in err
    assert "The last finite checkpoint is kept: " + str(tmp_path / "checkpoints" / "epoch-0001") in err
    state = checkpoint.load_training_state(str(tmp_path))
    assert state["epoch"] == 1 and all(math.isfinite(v) for w in state["weights"].values() for v in w.flat)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2
    assert not (tmp_path / "metrics.json").exists()


def test_a_run_that_diverges_at_once_says_no_checkpoint_was_saved(tmp_path, capsys):
    err = cli_error(capsys, tmp_path, *QUICK, "--lr", "1e9", "--schedule", "constant", code=1)
    assert "No checkpoint was saved" in err


def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path, monkeypatch, capsys):
    finished_run(tmp_path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    err = cli_error(capsys, tmp_path, *QUICK, "--overwrite")
    monkeypatch.undo()
    assert "cannot write the run in" in err and "No space left on device" in err
    leftovers = [os.path.join(d, n) for d, dirs, files in os.walk(tmp_path) for n in dirs + files if ".tmp" in n]
    assert leftovers == []
    assert checkpoint.load_training_state(str(tmp_path))["epoch"] == 2  # the earlier run is intact


def test_out_naming_a_file_or_an_unwritable_place_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert "is a file" in cli_error(capsys, tmp_path / "file", *QUICK)
    assert "cannot write to the run folder" in cli_error(capsys, tmp_path / "file" / "run", *QUICK)


def test_a_negative_seed_and_abbreviated_flags_are_one_line_errors(tmp_path, capsys):
    assert "--seed must be non-negative, but got -1" in cli_error(capsys, tmp_path, "--seed", "-1")
    finished_run(tmp_path)
    for abbreviated in (["--epoch", "3"], ["--no-plot"]):
        assert "unrecognized arguments: " + abbreviated[0] in cli_error(capsys, tmp_path, "--resume", *abbreviated)


def test_resuming_a_finished_run_says_so_and_fewer_epochs_are_refused(tmp_path, capsys):
    finished_run(tmp_path)
    capsys.readouterr()
    assert cli(tmp_path, "--resume", "--no-plots") == 0
    out = capsys.readouterr().out
    assert "has done all its 2 epochs; --epochs N (more than 2) trains on" in out and "epoch 3 of 2" not in out
    assert "--epochs 1 is fewer than the 2 epochs" in cli_error(capsys, tmp_path, "--resume", "--epochs", "1")
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["epochs"] == summary["config"]["epochs"] == 2


def test_resume_without_plots_removes_the_stale_ones(tmp_path):
    assert cli(tmp_path, *QUICK[:-1]) == 0
    assert (tmp_path / "curves.png").exists()
    assert cli(tmp_path, "--resume", "--epochs", "3", "--no-plots") == 0
    assert not list(tmp_path.glob("*.png"))  # they showed epoch 2's weights, not epoch 3's


def test_a_checkpoint_config_missing_keys_is_a_one_line_error(tmp_path, capsys):
    from gpucnn import arch, evaluate, optim
    import numpy as np

    model = arch.build_model("fc4", (1, 8, 8), 10)
    checkpoint.save(str(tmp_path), model, optim.SGD(model.parameters(), lr=0.1), 1, np.random.default_rng(0),
                    {"arch": "fc4", "classes": list("0123456789")})
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "the checkpoint's config has no dataset, in_shape, max_value, mean, std" in err
    assert "has no" in cli_error(capsys, tmp_path, "--resume") and "cannot be resumed" in cli_error(capsys, tmp_path, "--resume")


def test_weights_that_overflow_while_the_losses_stay_finite_are_never_saved(tmp_path, monkeypatch, capsys):
    real_epoch = train.run_epoch

    def overflows_in_epoch_2(model, *args, **kwargs):
        result = real_epoch(model, *args, **kwargs)
        if kwargs["desc"].startswith("epoch 2/"):
            model[-1].bias.data[0] = float("inf")  # a stray step; the logits' argmax and loss are not checked here
            monkeypatch.setattr(train, "predictions", lambda *a, **k: (None, 1.0, 0.5))
        return result

    monkeypatch.setattr(train, "run_epoch", overflows_in_epoch_2)
    err = cli_error(capsys, tmp_path, *QUICK, code=1)
    assert "a weight became NaN or infinite in epoch 2" in err
    assert checkpoint.load_training_state(str(tmp_path))["epoch"] == 1


def test_kill_9_of_an_overwriting_run_leaves_a_complete_checkpoint_and_no_lock(tmp_path):
    import signal
    import subprocess
    import sys

    finished_run(tmp_path)
    command = [sys.executable, "-m", "gpucnn.train", "--out", str(tmp_path), "--overwrite", "--epochs", "50",
               "--limit-train", "64", "--limit-test", "32", "--no-plots", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    while "training from" not in process.stdout.readline():
        assert process.poll() is None, "the run ended before it trained"
    process.stdout.readline()  # an epoch or two in, whichever comes
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = checkpoint.load_training_state(str(tmp_path))  # the earlier run's, or the new one's: complete either way
    assert state["epoch"] >= 1 and len(state["metrics"]) == state["epoch"]
    assert cli(tmp_path, "--resume", "--epochs", str(max(state["epoch"], 2))) == 0  # the lock died with the process
