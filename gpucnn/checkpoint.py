"""Checkpoints: safetensors only, written atomically, never a pickle.

A run folder keeps its newest checkpoint as checkpoints/epoch-NNNN/ with two files:

    model.safetensors           the weights under their state_dict names, so that
                                safetensors.torch.load_file(...) loads into the equivalent
                                torch.nn model; its metadata holds the run's config, the
                                epoch and a SHA-256 digest of the weights
    training_state.safetensors  optimizer arrays; its metadata (JSON) holds the epoch, the
                                optimizer's numbers, the shuffling generator's state, the
                                config, the lr scheduler's and the augmentation generator's
                                states, the metrics rows so far, the digest of its own arrays
                                and the digest of the weights it was saved with

safetensors has no checksum, so a flipped byte in tensor data would load silently: the
digests catch it. The state names the weights' digest, epoch and config, so a
training_state.safetensors copied in from another run or epoch is refused on --resume.

Each file is written to a temporary name, fsynced and renamed; the folder is built under a
temporary name too and renamed into place whole, and only then is the older epoch removed.
A run killed at any point keeps a complete checkpoint: the new one or the previous one.
"""
import hashlib
import json
import os
import re
import shutil
import struct

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from .files import fsync_dir, write_atomic

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
CHECKPOINTS = "checkpoints"
_EPOCH_DIR = re.compile(r"epoch-(\d+)")
_UNFINISHED_DIR = re.compile(r"\.epoch-\d+\.tmp")  # a save that was killed or failed
# First bytes of what torch.save and pickle.dump write: a zip archive, or a pickle protocol >= 2.
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, truncated or not a gpucnn safetensors file."""


def digest(tensors):
    """SHA-256 (hex) of named arrays: each name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.asarray(tensors[name], order="C")
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(run_dir, model, optimizer, epoch, rng, config, metrics=(), states=None):
    """Write checkpoints/epoch-<epoch>/ in run_dir atomically and drop every other epoch; returns its path.

    `metrics` (metrics.csv's rows up to this epoch) is kept with the training state, so that a
    resumed run's metrics.csv always matches its checkpoint. `states`: more JSON-ready state to
    resume from (the lr scheduler's, the augmentation generator's)."""
    root = os.path.join(run_dir, CHECKPOINTS)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"epoch-{epoch:04d}")
    tmp = os.path.join(root, f".epoch-{epoch:04d}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
    try:
        os.makedirs(tmp)

        # np.asarray, not np.ascontiguousarray: that makes a 0-d buffer (num_batches_tracked) 1-d.
        weights = {name: np.asarray(a, order="C") for name, a in model.state_dict().items()}
        weights_digest = digest(weights)
        write_atomic(os.path.join(tmp, MODEL_FILE), safetensors.numpy.save(weights, metadata={
            "format": "pt", "gpucnn_config": json.dumps(config), "gpucnn_epoch": str(epoch), "gpucnn_digest": weights_digest}))

        opt = optimizer.state_dict()
        arrays, numbers = {}, {}
        for i, entries in opt["state"].items():
            for key, value in entries.items():
                if hasattr(value, "shape"):
                    arrays[f"optimizer.{i}.{key}"] = np.ascontiguousarray(value)
                else:
                    numbers.setdefault(str(i), {})[key] = value
        state = {"epoch": epoch, "optimizer_hyper": opt["hyper"], "optimizer_numbers": numbers,
                 "rng": rng.bit_generator.state, "config": config, "states": states or {}, "metrics": list(metrics),
                 "weights_digest": weights_digest, "digest": digest(arrays)}
        write_atomic(os.path.join(tmp, STATE_FILE), safetensors.numpy.save(arrays, metadata={"gpucnn": json.dumps(state)}))
    except OSError:  # a full or read-only disk: no half-built checkpoint folder is left
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    if os.path.exists(final):  # the same epoch saved twice by a caller; gpucnn.train never does
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    for name in os.listdir(root):
        if (_EPOCH_DIR.fullmatch(name) or _UNFINISHED_DIR.fullmatch(name)) and name != os.path.basename(final):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return final


def latest(run_dir):
    """The newest complete checkpoint folder in run_dir, or None."""
    root = os.path.join(run_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return None
    epochs = [(int(m[1]), name) for name in os.listdir(root) if (m := _EPOCH_DIR.fullmatch(name))]
    return os.path.join(root, max(epochs)[1]) if epochs else None


def find(path):
    """The checkpoint folder meant by path: a run folder, a checkpoint folder or a file in one."""
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path))
    if os.path.isfile(os.path.join(path, MODEL_FILE)):
        return path
    found = latest(path) if os.path.isdir(path) else None
    if found is None:
        raise CheckpointError(f"no checkpoint at {path}: expected a run folder, a checkpoint folder or its {MODEL_FILE}")
    return found


def _safetensors_header(data):
    """Whether data opens as a safetensors file: its header's length (8 bytes, little-endian),
    then the JSON header. A length of 128 mod 256 makes its first byte 0x80, as a pickle's."""
    if len(data) < 9:
        return False
    (header_len,) = struct.unpack("<Q", data[:8])
    return 8 + header_len <= len(data) and data[8:9] == b"{"


def _read(path):
    """(tensors, metadata) of a safetensors file, with a clear error for anything else."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    if data.startswith(_PICKLE_MAGIC) and not _safetensors_header(data):
        raise CheckpointError(f"{path} looks like a pickle or torch.save file; gpucnn loads only safetensors")
    try:
        tensors = safetensors.numpy.load(data)
        (header_len,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, struct.error, ValueError) as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt or truncated ({e})") from None
    return tensors, metadata


def _check_digest(path, tensors, expected):
    if digest(tensors) != expected:
        raise CheckpointError(f"checkpoint file {path} is corrupt: its tensor data does not match the digest "
                              f"stored with it")


def _json_field(path, metadata, key):
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} is a safetensors file but not a gpucnn checkpoint (no valid {key!r} metadata)") from None


def load_model(path):
    """(weights {name: array}, config) from a checkpoint given as in `find`."""
    weights, config, _ = _load_model_file(os.path.join(find(path), MODEL_FILE))
    return weights, config


def _load_model_file(file):
    """(weights, config, epoch) of a model.safetensors, its digest checked."""
    weights, metadata = _read(file)
    config = _json_field(file, metadata, "gpucnn_config")
    epoch = _json_field(file, metadata, "gpucnn_epoch")
    if "gpucnn_digest" not in metadata:
        raise CheckpointError(f"{file} has no 'gpucnn_digest' metadata: not a checkpoint of this gpucnn version")
    _check_digest(file, weights, metadata["gpucnn_digest"])
    return weights, config, epoch


def load_training_state(path):
    """Everything `save` wrote, for --resume: weights, config, epoch, optimizer state_dict, rng, metrics.

    The training state must be the one saved with the weights beside it: same epoch, same
    config, same weights digest."""
    folder = find(path)
    weights, config, epoch = _load_model_file(os.path.join(folder, MODEL_FILE))
    file = os.path.join(folder, STATE_FILE)
    arrays, metadata = _read(file)
    state = _json_field(file, metadata, "gpucnn")
    try:
        _check_digest(file, arrays, state["digest"])
        mismatch = [what for what, ours, theirs in [
            (f"epoch ({state['epoch']}; the weights are epoch {epoch}'s)", state["epoch"], epoch),
            ("config", state["config"], config), ("weights digest", state["weights_digest"], digest(weights))]
            if ours != theirs]
        if mismatch:
            raise CheckpointError(
                f"{file} does not belong to the {MODEL_FILE} beside it: its {', '.join(mismatch)} "
                f"{'differs' if len(mismatch) == 1 else 'differ'}; a training state resumes only the weights it was saved with")
        optimizer_state = {int(i): dict(entries) for i, entries in state["optimizer_numbers"].items()}
        for key, value in arrays.items():
            _, i, name = key.split(".", 2)
            optimizer_state.setdefault(int(i), {})[name] = value
        rng = getattr(np.random, state["rng"]["bit_generator"])()
        rng.state = state["rng"]
        return {
            "weights": weights, "config": config, "epoch": int(epoch),
            "optimizer": {"hyper": state["optimizer_hyper"], "state": optimizer_state},
            "rng": np.random.Generator(rng), "metrics": list(state["metrics"]), "states": state.get("states", {}),
        }
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{file}: incomplete training state ({type(e).__name__}: {e})") from None
