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
import math
import os
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

from . import arch, checkpoint, cuda, data, distributed, nn, optim, plots
from .distributed.evaluation import sharded_metrics
from .evaluate import predictions
from .nn.init import manual_seed

DEFAULT_EPOCHS = 30
# Chosen among a few values on the digits (3 seeds x 2 splits). Weight decay regularizes:
# LeNet-5 fits the 1,437 training digits perfectly within a dozen epochs.
DEFAULT_LR = {"sgd": 0.05, "adam": 0.002}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-3, "adam": 1e-3}
METRICS = ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "images_per_second", "seconds"]
PLOTS = ["curves.png", "filters.png", "feature_maps.png"]
# What a resumed run may take from its command line; every other setting is the stored run's.
RESUME_MAY_CHANGE = {"--resume", "--out", "--epochs", "--data-dir", "--device", "--no-plots",
                     "--distributed", "--distributed-timeout"}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gpucnn-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=list(data.SOURCES), default="digits", help="default: digits, embedded")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST / Fashion-MNIST IDX files or CIFAR-10 .bin files")
    p.add_argument("--arch", default="lenet5-3x3",
                   help=f"a preset ({', '.join(arch.PRESETS)}; default lenet5-3x3) or a spec such as {arch.PRESETS['lenet5']!r} (see gpucnn/arch.py)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"number of epochs (default: {DEFAULT_EPOCHS}); with --resume, may raise the stored number")
    p.add_argument("--batch-size", type=int, default=32, help="default: 32")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="default: sgd")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05 for sgd, 0.002 for adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=None, help="L2 penalty (default: 0.005 for sgd, 0.001 for adam)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning rate per epoch: cosine decay from --lr towards 0 (default), or constant")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the shuffling (default: 0)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when CuPy sees a GPU, else cpu")
    p.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<arch>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint, with its stored settings (--epochs may raise its length)")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N training images only")
    p.add_argument("--limit-test", type=int, default=None, metavar="N", help="test on the first N test images only")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--distributed", action="store_true",
                   help="data parallel over the processes mpiexec started (needs gpucnn[mpi]); --batch-size is the "
                        "global batch, split across them; rank 0 prints and writes the run folder")
    p.add_argument("--distributed-timeout", type=float, default=distributed.world.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="with --distributed: how long a rank waits for the others before it names the missing "
                        f"ones and stops the run (default: {distributed.world.DEFAULT_TIMEOUT:g})")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "limit_train", "limit_test"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, but got {value}")
    if args.distributed_timeout <= 0:
        p.error(f"--distributed-timeout must be positive, but got {args.distributed_timeout}")
    if args.lr is not None and args.lr <= 0:
        p.error(f"--lr must be positive, but got {args.lr}")
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


def make_optimizer(config, params):
    if config["optimizer"] == "adam":
        return optim.Adam(params, lr=config["lr"], weight_decay=config["weight_decay"])
    return optim.SGD(params, lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"])


def lr_at(config, epoch):
    """The learning rate of epoch 1, 2, ...: cosine annealing from --lr towards 0 over --epochs."""
    if config["schedule"] == "constant":
        return config["lr"]
    return config["lr"] * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config["epochs"]))


def limited(x, y, n):
    return (x, y) if n is None else (x[:n], y[:n])


def run_epoch(model, criterion, optimizer, x, y, config, rng, device, desc, world=None):
    """One pass over the training images in a shuffled order; (mean loss, accuracy) as it trained.
    With a `world`, model is a DistributedDataParallel and this rank takes its share of each batch."""
    model.train()
    batches = data.batch_indices(len(x), config["batch_size"], rng)
    if world is not None:
        batches = distributed.shard_batches(batches, world.rank, world.size)
    loss_sum, correct = 0.0, 0
    bar = tqdm(batches, desc=desc, leave=False, unit="batch", disable=not sys.stderr.isatty())
    for idx in bar:
        if len(idx) == 0:  # this rank's share of a last batch with fewer images than ranks
            optimizer.zero_grad()
            model.backward(None)  # still joins the gradient all-reduce
            optimizer.step()
            continue
        xb = cuda.to_device(data.normalize(x[idx], config["max_value"], config["mean"], config["std"]), device)
        yb = cuda.to_device(y[idx], device)
        optimizer.zero_grad()
        logits = model(xb)
        loss = criterion(logits, yb)
        model.backward(criterion.backward())
        optimizer.step()
        loss_sum += loss * len(idx)
        correct += int((cuda.as_numpy(logits).argmax(axis=1) == y[idx]).sum())
        bar.set_postfix(loss=f"{loss:.4f}")
    if world is not None:
        loss_sum, correct = world.sum(loss_sum, correct)
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
        "limit_train": args.limit_train, "limit_test": args.limit_test,
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


def start_distributed(args, device):
    """The World of a --distributed run, or None; its other ranks print nothing and each takes its own GPU."""
    if not args.distributed:
        return None
    world = distributed.init(timeout=args.distributed_timeout)
    world.silence_stdout_unless_root()
    if device == "cuda":
        distributed.select_local_gpu(world)
    return world


def held_out_metrics(model, x, y, config, batch_size, device, world):
    """(mean loss, accuracy) on the test images; with a world, each rank evaluates a share."""
    if world is not None:
        return sharded_metrics(world, model, x, y, config, batch_size, device)
    return predictions(model, x, config, batch_size, device, labels=y)[1:]


@distributed.abort_on_error
def main(argv=None):
    parser, args = parse_args(argv)
    out = args.out
    try:
        device = cuda.check_device(args.device or cuda.default_device())
        world = start_distributed(args, device)
        resumed = checkpoint.load_training_state(out) if args.resume else None
        config = resumed_config(args, resumed) if resumed else fresh_config(args)
        dataset = data.load(config["dataset"], config["data_dir"])
        x_train, y_train = limited(dataset.x_train, dataset.y_train, config["limit_train"])
        x_test, y_test = limited(dataset.x_test, dataset.y_test, config["limit_test"])
        if not resumed:
            describe_data(config, dataset, x_train)
        manual_seed(config["seed"])
        model = arch.build_model(config["arch"], tuple(config["in_shape"]), len(config["classes"])).to(device)
        optimizer = make_optimizer(config, model.parameters())
        if resumed:
            model.load_state_dict(resumed["weights"])
            optimizer.load_state_dict(resumed["optimizer"])
        trainee = distributed.DistributedDataParallel(model, world) if world else model
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")

    criterion = nn.CrossEntropyLoss()
    writes = world is None or world.is_root  # one writer for the run folder
    os.makedirs(out, exist_ok=True)
    metrics_csv = os.path.join(out, "metrics.csv")
    if resumed:
        rng, start = resumed["rng"], resumed["epoch"] + 1
        rows = read_metrics(metrics_csv, resumed["epoch"])
    else:
        if writes:
            clear_run(out)
        rng, start, rows = np.random.default_rng(config["seed"]), 1, []
    if writes:
        write_metrics(metrics_csv, rows)

    n_params = sum(p.data.size for p in model.parameters())
    print(f"{config['dataset']}: {len(x_train)} training and {len(x_test)} held-out test images of "
          f"{'x'.join(map(str, config['in_shape']))}, {len(config['classes'])} classes")
    print(f"model: {config['arch']} ({n_params:,} parameters) on {device}; {config['optimizer']} lr {config['lr']:g} "
          f"({config['schedule']}), batch {config['batch_size']}, seed {config['seed']}")
    if world:
        print(f"data parallel over {world.size} ranks: each takes 1/{world.size} of every batch of {config['batch_size']}")
    print(("resuming at" if args.resume else "training from") + f" epoch {start} of {config['epochs']}; run folder {out}")

    eval_batch = max(config["batch_size"], 500)
    for epoch in range(start, config["epochs"] + 1):
        optimizer.lr = lr_at(config, epoch)
        t0 = time.perf_counter()
        train_loss, train_acc = run_epoch(trainee, criterion, optimizer, x_train, y_train, config, rng, device,
                                          desc=f"epoch {epoch}/{config['epochs']}", world=world)
        train_seconds = time.perf_counter() - t0
        model.eval()
        test_loss, test_acc = held_out_metrics(model, x_test, y_test, config, eval_batch, device, world)
        row = {"epoch": epoch, "lr": f"{optimizer.lr:.6g}", "train_loss": f"{train_loss:.6f}",
               "train_accuracy": f"{train_acc:.6f}", "test_loss": f"{test_loss:.6f}", "test_accuracy": f"{test_acc:.6f}",
               "images_per_second": f"{len(x_train) / train_seconds:.1f}", "seconds": f"{time.perf_counter() - t0:.3f}"}
        rows.append(row)
        if writes:
            append_metrics(metrics_csv, row)
            checkpoint.save(out, model, optimizer, epoch, rng, config)
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
    if not writes:
        return 0
    checkpoint.write_atomic(os.path.join(out, "metrics.json"), (json.dumps(summary, indent=2) + "\n").encode())
    drawn = [] if args.no_plots else save_plots(out, model, rows, x_test, y_test, config, device)
    print(f"test accuracy {100 * summary['test_accuracy']:.2f}% on {len(x_test)} held-out images "
          f"after {summary['epochs']} epochs ({summary['seconds']:.1f} s)")
    written = ["metrics.csv", "metrics.json"] + drawn
    print(f"wrote {', '.join(written)} in {out}; weights in {os.path.join(summary['checkpoint'], checkpoint.MODEL_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
