"""python -m gpucnn.train (or gpucnn-train, or make train): train a CNN and keep what it learned.

With no arguments: LeNet-5 on scikit-learn's 8x8 handwritten digits, which ship inside its
wheel, so it runs offline; 360 of the 1,797 images are held out and never trained on.
The run folder (--out) gets metrics.csv (one row per epoch), metrics.json, PNG plots and a
checkpoint after every epoch, which --resume continues from exactly.
"""
import argparse
import csv
import io
import json
import os
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

from . import arch, checkpoint, cuda, data, nn, plots, recipe
from .evaluate import predictions
from .nn.init import manual_seed

DEFAULT_EPOCHS = 30
# Chosen among a few values on the digits (3 seeds x 2 splits). Weight decay regularizes:
# LeNet-5 fits the 1,437 training digits perfectly within a dozen epochs. AdamW takes Adam's lr
# and torch's default decoupled decay (0.002 and 0.01: 98.61% on the digits, seed 0, as 0.05 did).
DEFAULT_LR = {"sgd": 0.05, "adam": 0.002, "adamw": 0.002}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-3, "adam": 1e-3, "adamw": 1e-2}
METRICS = ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "images_per_second", "seconds"]
PLOTS = ["curves.png", "filters.png", "feature_maps.png"]
# What a resumed run may take from its command line; every other setting is the stored run's.
RESUME_MAY_CHANGE = {"--resume", "--out", "--epochs", "--data-dir", "--device", "--no-plots"}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gpucnn-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=list(data.SOURCES), default="digits", help="default: digits, embedded")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST / Fashion-MNIST IDX files or CIFAR-10 .bin files")
    p.add_argument("--arch", default="lenet5-3x3",
                   help=f"a preset ({', '.join(arch.PRESETS)}, resnet<D>-w<W>; default lenet5-3x3) or a spec such as "
                        f"{arch.PRESETS['lenet5']!r} or {arch.PRESETS['resnet']!r} (see gpucnn/arch.py)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"number of epochs (default: {DEFAULT_EPOCHS}); with --resume, may raise the stored number")
    p.add_argument("--batch-size", type=int, default=32, help="default: 32")
    p.add_argument("--optimizer", choices=list(DEFAULT_LR), default="sgd", help="default: sgd")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05 for sgd, 0.002 for adam and adamw)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 penalty (default: 0.005 for sgd, 0.001 for adam); adamw's decoupled decay (default: 0.01, torch's)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning rate per epoch: cosine decay from --lr towards 0 (default), or constant")
    recipe.add_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the shuffling (default: 0)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when CuPy sees a GPU, else cpu")
    p.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<arch>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint, with its stored settings (--epochs may raise its length)")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N training images only")
    p.add_argument("--limit-test", type=int, default=None, metavar="N", help="test on the first N test images only")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "limit_train", "limit_test"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, but got {value}")
    if args.lr is not None and args.lr <= 0:
        p.error(f"--lr must be positive, but got {args.lr}")
    recipe.check_arguments(p, args, args.epochs or DEFAULT_EPOCHS)
    if args.resume:
        given = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")}
        fixed = sorted(given - RESUME_MAY_CHANGE)
        if fixed:
            p.error(f"--resume continues a run with its stored settings: {', '.join(fixed)} cannot change them "
                    f"(only {', '.join(sorted(RESUME_MAY_CHANGE - {'--resume'}))} can)")
    if args.out is None:
        label = args.arch if args.arch in arch.PRESETS else "custom"
        args.out = os.path.join("runs", f"{args.dataset}-{label}")
    return p, args


def limited(x, y, n):
    return (x, y) if n is None else (x[:n], y[:n])


def run_epoch(model, criterion, optimizer, x, y, config, rng, device, desc, augmenter=None):
    """One pass over the training images in a shuffled order, each batch through augmenter
    when there is one; (mean loss, accuracy) as it trained."""
    model.train()
    batches = data.batch_indices(len(x), config["batch_size"], rng)
    loss_sum, correct = 0.0, 0
    bar = tqdm(batches, desc=desc, leave=False, unit="batch", disable=not sys.stderr.isatty())
    for idx in bar:
        images = x[idx] if augmenter is None else augmenter(x[idx])
        xb = cuda.to_device(data.normalize(images, config["max_value"], config["mean"], config["std"]), device)
        yb = cuda.to_device(y[idx], device)
        optimizer.zero_grad()
        logits = model(xb)
        loss = criterion(logits, yb)
        model.backward(criterion.backward())
        optimizer.step()
        loss_sum += loss * len(idx)
        correct += int((cuda.as_numpy(logits).argmax(axis=1) == y[idx]).sum())
        bar.set_postfix(loss=f"{loss:.4f}")
    return loss_sum / len(x), correct / len(x)


def read_metrics(path, up_to_epoch):
    """metrics.csv's rows for epochs <= up_to_epoch (rows past the checkpoint belong to a killed epoch)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= up_to_epoch]


def write_metrics(path, rows):
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRICS)
    writer.writeheader()
    writer.writerows(rows)
    checkpoint.write_atomic(path, text.getvalue().encode())


def append_metrics(path, row):
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=METRICS).writerow(row)
        f.flush()
        os.fsync(f.fileno())


def fresh_config(args):
    """The run's config from the command line; `describe_data` adds what the data says."""
    return {
        "dataset": args.dataset, "data_dir": args.data_dir, "arch": arch.resolve(args.arch),
        "epochs": args.epochs or DEFAULT_EPOCHS, "batch_size": args.batch_size, "optimizer": args.optimizer,
        "lr": args.lr if args.lr is not None else DEFAULT_LR[args.optimizer], "momentum": args.momentum,
        "weight_decay": args.weight_decay if args.weight_decay is not None else DEFAULT_WEIGHT_DECAY[args.optimizer],
        "schedule": args.schedule, "seed": args.seed,
        "limit_train": args.limit_train, "limit_test": args.limit_test, **recipe.config_of(args),
    }


def describe_data(config, dataset, x_train):
    """Input shape, class names and the training images' statistics, which fix the preprocessing."""
    mean, std = data.channel_stats(x_train, dataset.max_value)
    config.update(in_shape=list(x_train.shape[1:]), classes=dataset.classes, max_value=dataset.max_value,
                  mean=mean, std=std)


def resumed_config(args, resumed):
    """The checkpoint's config; --epochs and --data-dir, when given, replace the stored ones."""
    config = resumed["config"]
    config["epochs"] = args.epochs or config["epochs"]
    config["data_dir"] = args.data_dir or config["data_dir"]
    return config


def clear_run(out):
    """Remove an earlier run's outputs from `out` before a fresh (not resumed) run writes there."""
    for name in ["metrics.csv", "metrics.json"] + PLOTS:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    root = os.path.join(out, checkpoint.CHECKPOINTS)
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if os.path.isdir(path) and (name.startswith("epoch-") or name.startswith(".epoch-")):
                shutil.rmtree(path)


def save_plots(out, model, rows, x_test, y_test, config, device):
    """Draw PLOTS (a net without convolutions has no filters or feature maps: its curves only); returns the names drawn."""
    plots.curves(rows, os.path.join(out, "curves.png"))
    conv = next((m for m in model if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return PLOTS[:1]
    plots.filters(cuda.as_numpy(conv.weight.data), os.path.join(out, "filters.png"))
    image = data.normalize(x_test[:1], config["max_value"], config["mean"], config["std"])
    maps = cuda.to_device(image, device)
    model.eval()
    for m in model:  # up to and including the first convolution's ReLU
        maps = m(maps)
        if isinstance(m, nn.ReLU):
            break
    label = config["classes"][int(y_test[0])]
    plots.feature_maps(image[0], cuda.as_numpy(maps)[0], label, os.path.join(out, "feature_maps.png"))
    return PLOTS


def main(argv=None):
    parser, args = parse_args(argv)
    out = args.out
    try:
        device = cuda.check_device(args.device or cuda.default_device())
        resumed = checkpoint.load_training_state(out) if args.resume else None
        config = resumed_config(args, resumed) if resumed else fresh_config(args)
        dataset = data.load(config["dataset"], config["data_dir"])
        x_train, y_train = limited(dataset.x_train, dataset.y_train, config["limit_train"])
        x_test, y_test = limited(dataset.x_test, dataset.y_test, config["limit_test"])
        if not resumed:
            describe_data(config, dataset, x_train)
        manual_seed(config["seed"])
        model = arch.build_model(config["arch"], tuple(config["in_shape"]), len(config["classes"])).to(device)
        optimizer = recipe.make_optimizer(config, model.parameters())
        if resumed:
            model.load_state_dict(resumed["weights"])
        scheduler = recipe.schedule(config, optimizer, resumed)
        augmenter = recipe.make_augment(config, resumed)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")

    criterion = recipe.make_criterion(config)
    os.makedirs(out, exist_ok=True)
    metrics_csv = os.path.join(out, "metrics.csv")
    if resumed:
        rng, start = resumed["rng"], resumed["epoch"] + 1
        rows = read_metrics(metrics_csv, resumed["epoch"])
        write_metrics(metrics_csv, rows)
    else:
        clear_run(out)
        rng, start, rows = np.random.default_rng(config["seed"]), 1, []
        write_metrics(metrics_csv, rows)

    n_params = sum(p.data.size for p in model.parameters())
    print(f"{config['dataset']}: {len(x_train)} training and {len(x_test)} held-out test images of "
          f"{'x'.join(map(str, config['in_shape']))}, {len(config['classes'])} classes")
    print(f"model: {config['arch']} ({n_params:,} parameters) on {device}; {config['optimizer']} lr {config['lr']:g} "
          f"({config['schedule']}), batch {config['batch_size']}, seed {config['seed']}")
    print(("resuming at" if args.resume else "training from") + f" epoch {start} of {config['epochs']}; run folder {out}")

    eval_batch = max(config["batch_size"], 500)
    for epoch in range(start, config["epochs"] + 1):
        t0 = time.perf_counter()
        train_loss, train_acc = run_epoch(model, criterion, optimizer, x_train, y_train, config, rng, device,
                                          desc=f"epoch {epoch}/{config['epochs']}", augmenter=augmenter)
        train_seconds = time.perf_counter() - t0
        model.eval()
        _, test_loss, test_acc = predictions(model, x_test, config, eval_batch, device, labels=y_test)
        row = {"epoch": epoch, "lr": f"{optimizer.lr:.6g}", "train_loss": f"{train_loss:.6f}",
               "train_accuracy": f"{train_acc:.6f}", "test_loss": f"{test_loss:.6f}", "test_accuracy": f"{test_acc:.6f}",
               "images_per_second": f"{len(x_train) / train_seconds:.1f}", "seconds": f"{time.perf_counter() - t0:.3f}"}
        append_metrics(metrics_csv, row)
        rows.append(row)
        scheduler.step()  # the next epoch's lr, saved with the optimizer
        checkpoint.save(out, model, optimizer, epoch, rng, config, states=recipe.states(config, scheduler, augmenter))
        print(f"epoch {epoch:3d}/{config['epochs']}  loss {train_loss:.4f}  train {100 * train_acc:6.2f}%  "
              f"test {100 * test_acc:6.2f}%  {len(x_train) / train_seconds:7.0f} img/s  {row['seconds']} s", flush=True)

    if not rows:
        parser.exit(2, f"{parser.prog}: error: {metrics_csv} has no epochs to report\n")
    summary = {
        "test_accuracy": float(rows[-1]["test_accuracy"]), "test_loss": float(rows[-1]["test_loss"]),
        "train_accuracy": float(rows[-1]["train_accuracy"]), "train_loss": float(rows[-1]["train_loss"]),
        "epochs": int(rows[-1]["epoch"]), "train_images": len(x_train), "test_images": len(x_test),
        "seconds": round(sum(float(r["seconds"]) for r in rows), 3),
        "median_images_per_second": float(np.median([float(r["images_per_second"]) for r in rows])),
        "device": device, "checkpoint": checkpoint.latest(out), "config": config,
    }
    checkpoint.write_atomic(os.path.join(out, "metrics.json"), (json.dumps(summary, indent=2) + "\n").encode())
    drawn = [] if args.no_plots else save_plots(out, model, rows, x_test, y_test, config, device)
    print(f"test accuracy {100 * summary['test_accuracy']:.2f}% on {len(x_test)} held-out images "
          f"after {summary['epochs']} epochs ({summary['seconds']:.1f} s)")
    written = ["metrics.csv", "metrics.json"] + drawn
    print(f"wrote {', '.join(written)} in {out}; weights in {os.path.join(summary['checkpoint'], checkpoint.MODEL_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
