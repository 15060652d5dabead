"""python -m gpucnn.evaluate CHECKPOINT: accuracy and loss of a trained model on its data
set's held-out test split, and per class.

CHECKPOINT is a run folder (its newest checkpoint), a checkpoint folder or its
model.safetensors. The data set, its preprocessing and the architecture come from the
config stored with the weights.
"""
import argparse
import sys

import numpy as np

from . import arch, checkpoint, cuda, data
from . import nn

# What the model and its preprocessing need from a checkpoint's config.
CONFIG_KEYS = ("dataset", "arch", "in_shape", "classes", "max_value", "mean", "std")


def load_trained(path, device):
    """(model in eval mode on device, config) from a checkpoint."""
    weights, config = checkpoint.load_model(path)
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise checkpoint.CheckpointError(f"{path}: the checkpoint's config has no {', '.join(missing)}; "
                                         f"it was not written by gpucnn-train")
    model = arch.build_model(config["arch"], tuple(config["in_shape"]), len(config["classes"]))
    try:
        model.load_state_dict(weights)
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{path}: weights do not fit the stored architecture {config['arch']!r}: {e}") from None
    return model.to(device).eval(), config


def predictions(model, x, config, batch_size, device, labels=None):
    """Logits (NumPy, N x classes) of uint8 images, in batches; with labels also (mean loss, accuracy).

    Each batch's logits and loss stay on the device until the last batch is queued, and come
    back in one transfer each: the host never waits for the GPU between batches. The labels
    are checked once, here on the host, so the loss need not read them back per batch."""
    classes = len(config["classes"])
    if labels is not None and len(labels) and not 0 <= labels.min() <= labels.max() < classes:
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"evaluate: label {bad} is out of range for the model's {classes} classes "
                         f"(expected 0 <= label < {classes})")
    criterion = nn.CrossEntropyLoss(validate_args=False)
    logits, losses, sizes = [], [], []
    for idx in data.batch_indices(len(x), batch_size):
        xb = cuda.to_device(data.normalize(x[idx], config["max_value"], config["mean"], config["std"]), device)
        out = model(xb)
        if labels is not None:
            losses.append(criterion(out, cuda.to_device(labels[idx], device)))
            sizes.append(len(idx))
        logits.append(out)
    logits = (cuda.as_numpy(cuda.get_array_module(*logits).concatenate(logits)) if logits
              else np.zeros((0, classes), np.float32))
    if labels is None:
        return logits
    loss_sum = 0.0
    for loss, n in zip(cuda.scalars(losses), sizes):
        loss_sum += float(loss) * n
    return logits, loss_sum / max(len(x), 1), float((logits.argmax(axis=1) == labels).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpucnn.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run folder, checkpoint folder or model.safetensors")
    parser.add_argument("--data-dir", help="where the data set's files are (default: the one used for training)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be positive, but got {args.batch_size}")
    try:
        device = cuda.check_device(args.device or cuda.default_device())
        model, config = load_trained(args.checkpoint, device)
        # The test split only: evaluating needs no training files.
        x, y = data.load_split(config["dataset"], args.data_dir or config.get("data_dir"), "test")
        data.check_shape(x, config["in_shape"], f"the {config['dataset']} test images")
        logits, loss, accuracy = predictions(model, x, config, args.batch_size, device, labels=y)
    except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: cuda.DeviceSetupError too
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    predicted = logits.argmax(axis=1)
    print(f"{config['dataset']} test split: {len(y)} images, accuracy {100 * accuracy:.2f}% "
          f"({int((predicted == y).sum())}/{len(y)}), loss {loss:.4f}")
    for c, name in enumerate(config["classes"]):
        mask = y == c
        if mask.any():
            print(f"  class {name:>12}: {100 * (predicted[mask] == c).mean():6.2f}% of {int(mask.sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
