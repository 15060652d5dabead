"""Checkpoints: a full round trip, atomic replacement, and clear errors for bad files."""
import json
import os
import pickle

import numpy as np
import pytest
import safetensors.numpy

from gpucnn import arch, checkpoint, manual_seed, nn, optim

CONFIG = {"arch": "conv2k3 fc4", "in_shape": [1, 5, 5], "classes": ["a", "b", "c"]}


def trained_pieces(seed=0):
    manual_seed(seed)
    model = arch.build_model(CONFIG["arch"], (1, 5, 5), 3)
    opt = optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 1, 5, 5)).astype(np.float32)
    crit = nn.CrossEntropyLoss()
    for _ in range(2):
        opt.zero_grad()
        crit(model(x), np.array([0, 1, 2, 0]))
        model.backward(crit.backward())
        opt.step()
    return model, opt, rng


def test_round_trip_restores_weights_optimizer_rng_and_epoch(tmp_path):
    model, opt, rng = trained_pieces()
    path = checkpoint.save(str(tmp_path), model, opt, 3, rng, CONFIG)
    assert os.path.basename(path) == "epoch-0003" and checkpoint.latest(str(tmp_path)) == path
    state = checkpoint.load_training_state(str(tmp_path))
    assert state["epoch"] == 3 and state["config"] == CONFIG
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(state["weights"][name], value)
    saved = opt.state_dict()
    assert state["optimizer"]["hyper"]["lr"] == 0.01 and list(state["optimizer"]["hyper"]["betas"]) == [0.9, 0.999]
    for i, entries in saved["state"].items():
        assert state["optimizer"]["state"][i]["step"] == entries["step"] == 2
        np.testing.assert_array_equal(state["optimizer"]["state"][i]["exp_avg_sq"], entries["exp_avg_sq"])
    assert state["rng"].random() == rng.random()  # the generator goes on where it was


def test_newer_epoch_replaces_older(tmp_path):
    model, opt, rng = trained_pieces()
    checkpoint.save(str(tmp_path), model, opt, 1, rng, CONFIG)
    checkpoint.save(str(tmp_path), model, opt, 2, rng, CONFIG)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch-0002"]


class Killed(BaseException):
    """Stands for the process dying at this instant."""


@pytest.mark.parametrize("kill_at_replace", [1, 3])  # the first file's rename; the folder's rename
def test_save_killed_before_rename_keeps_previous_checkpoint(tmp_path, monkeypatch, kill_at_replace):
    model, opt, rng = trained_pieces()
    checkpoint.save(str(tmp_path), model, opt, 1, rng, CONFIG)
    before = model.state_dict()
    model[0].weight.data += 1.0
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == kill_at_replace:
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(Killed):
        checkpoint.save(str(tmp_path), model, opt, 2, rng, CONFIG)
    monkeypatch.undo()
    weights, config = checkpoint.load_model(str(tmp_path))
    assert checkpoint.load_training_state(str(tmp_path))["epoch"] == 1 and config == CONFIG
    np.testing.assert_array_equal(weights["0.weight"], before["0.weight"])
    checkpoint.save(str(tmp_path), model, opt, 2, rng, CONFIG)  # the next save clears the leftovers
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch-0002"]


def test_truncated_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    model, opt, rng = trained_pieces()
    folder = checkpoint.save(str(tmp_path), model, opt, 1, rng, CONFIG)
    model_file = os.path.join(folder, checkpoint.MODEL_FILE)
    good = open(model_file, "rb").read()
    for broken in (good[: len(good) // 2], good[:5], b"", b"\xff" * 64):
        open(model_file, "wb").write(broken)
        with pytest.raises(checkpoint.CheckpointError, match="is corrupt or truncated"):
            checkpoint.load_model(str(tmp_path))
    open(model_file, "wb").write(good)
    state_file = os.path.join(folder, checkpoint.STATE_FILE)
    open(state_file, "wb").write(open(state_file, "rb").read()[:-7])
    with pytest.raises(checkpoint.CheckpointError, match="training_state.safetensors is corrupt or truncated"):
        checkpoint.load_training_state(str(tmp_path))


def test_pickles_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"0.weight": [1.0]}))
    with pytest.raises(checkpoint.CheckpointError, match="looks like a pickle or torch.save file"):
        checkpoint.load_model(str(path))
    path.write_bytes(safetensors.numpy.save({"w": np.zeros(2, np.float32)}))
    with pytest.raises(checkpoint.CheckpointError, match="not a gpucnn checkpoint"):
        checkpoint.load_model(str(path))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load_model(str(tmp_path / "empty"))


def test_a_flipped_byte_in_tensor_data_is_caught_by_the_digest(tmp_path):
    model, opt, rng = trained_pieces()
    folder = checkpoint.save(str(tmp_path), model, opt, 1, rng, CONFIG)
    for name, load in ((checkpoint.MODEL_FILE, checkpoint.load_model),
                       (checkpoint.STATE_FILE, checkpoint.load_training_state)):
        path = os.path.join(folder, name)
        good = open(path, "rb").read()
        broken = bytearray(good)
        broken[-3] ^= 0x01  # inside the last tensor's data: safetensors itself sees nothing wrong
        open(path, "wb").write(bytes(broken))
        with pytest.raises(checkpoint.CheckpointError, match=f"{name} is corrupt: its tensor data does not match"):
            load(str(tmp_path))
        open(path, "wb").write(good)
    assert checkpoint.load_training_state(str(tmp_path))["epoch"] == 1


def test_a_training_state_from_another_epoch_or_run_is_refused(tmp_path):
    model, opt, rng = trained_pieces()
    first = checkpoint.save(str(tmp_path / "a"), model, opt, 1, rng, CONFIG)
    stale = open(os.path.join(first, checkpoint.STATE_FILE), "rb").read()
    model[0].weight.data += 1.0
    second = checkpoint.save(str(tmp_path / "a"), model, opt, 2, rng, CONFIG)
    open(os.path.join(second, checkpoint.STATE_FILE), "wb").write(stale)
    with pytest.raises(checkpoint.CheckpointError, match=r"does not belong to the model.safetensors beside it: "
                                                         r"its epoch \(1; the weights are epoch 2's\), weights digest differ"):
        checkpoint.load_training_state(str(tmp_path / "a"))
    other = checkpoint.save(str(tmp_path / "b"), *trained_pieces(seed=1)[:1], opt, 2, rng, CONFIG)
    open(os.path.join(second, checkpoint.STATE_FILE), "wb").write(
        open(os.path.join(other, checkpoint.STATE_FILE), "rb").read())
    with pytest.raises(checkpoint.CheckpointError, match="its weights digest differs"):
        checkpoint.load_training_state(str(tmp_path / "a"))


def test_metrics_rows_travel_with_the_training_state(tmp_path):
    model, opt, rng = trained_pieces()
    rows = [{"epoch": 1, "test_accuracy": "0.5"}]
    checkpoint.save(str(tmp_path), model, opt, 1, rng, CONFIG, rows)
    assert checkpoint.load_training_state(str(tmp_path))["metrics"] == rows
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_header_length_of_128_mod_256_is_no_pickle(tmp_path, protocol):
    """A safetensors header of 128 + 256k bytes opens with 0x80, a pickle's first byte: such a
    checkpoint loads, and a pickle is still refused."""
    path = tmp_path / "model.safetensors"
    weights = {"w": np.zeros(2, np.float32)}
    for pad in range(256):
        data = safetensors.numpy.save(weights, metadata={"gpucnn_config": json.dumps({"pad": "x" * pad}),
                                                         "gpucnn_epoch": "1", "gpucnn_digest": checkpoint.digest(weights)})
        if data[0] == 0x80:
            break
    path.write_bytes(data)
    assert checkpoint.load_model(str(path))[1] == {"pad": "x" * pad}
    path.write_bytes(pickle.dumps({"w": [0.0, 0.0]}, protocol=protocol))
    with pytest.raises(checkpoint.CheckpointError, match="looks like a pickle or torch.save file"):
        checkpoint.load_model(str(path))
