"""python -m gpucnn.train (or gpucnn-train, or make train): train a CNN and keep what it learned.

With no arguments: LeNet-5 on scikit-learn's 8x8 handwritten digits, which ship inside its
wheel, so it runs offline; 360 of the 1,797 images are held out and never trained on.
The run folder (--out) gets metrics.csv (one row per epoch), metrics.json, PNG plots and a
checkpoint after every epoch (only the newest is kept), which --resume continues from exactly.
A folder holding a run is never replaced without --overwrite, and then only once the new run
has saved its first epoch. Exit status: 0 done, 2 a bad setting or file (one line on stderr),
1 the loss became NaN or infinite (the last finite checkpoint is kept).
"""
import argparse
import csv
import io
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
from tqdm import tqdm

from . import arch, checkpoint, cuda, data, distributed, files, nn, plots, recipe, runs
from .distributed.evaluation import sharded_metrics
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
RESUME_MAY_CHANGE = {"--resume", "--out", "--epochs", "--data-dir", "--device", "--no-plots",
                     "--distributed", "--distributed-timeout"}


class Diverged(RuntimeError):
    """The loss became NaN or infinite: the run stops before it saves weights that are not finite."""


def parse_args(argv):
    # No abbreviations: --epoch would be --epochs, and --resume's check of what changed sees what was typed.
    p = argparse.ArgumentParser(prog="gpucnn-train", description=__doc__.split("\n\n")[0], allow_abbrev=False)
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
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint, with its stored settings (--epochs may raise its length)")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out (it is kept until this run has saved its first epoch)")
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
    check_settings(p, args)
    recipe.check_arguments(p, args, args.epochs or DEFAULT_EPOCHS)
    if args.distributed_timeout <= 0:
        p.error(f"--distributed-timeout must be positive, but got {args.distributed_timeout}")
    if args.resume:
        given = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--")}
        fixed = sorted(given - RESUME_MAY_CHANGE)
        if fixed:
            p.error(f"--resume continues a run with its stored settings: {', '.join(fixed)} cannot change them "
                    f"(only {', '.join(sorted(RESUME_MAY_CHANGE - {'--resume'}))} can)")
    if args.out is None:
        # A spec's own tokens name its folder, so that two specs never share (and replace) one run.
        label = args.arch if args.arch in arch.PRESETS else "_".join(args.arch.split())
        args.out = os.path.join("runs", f"{args.dataset}-{label}")
    return p, args


def check_settings(p, args):
    """Refuse numbers that cannot train: a NaN or infinite --lr ends in a NaN run that exits 0."""
    for name, low, strict in (("lr", 0, True), ("momentum", 0, False), ("weight_decay", 0, False)):
        value = getattr(args, name)
        flag = f"--{name.replace('_', '-')}"
        if value is not None and not math.isfinite(value):
            p.error(f"{flag} must be a finite number, but got {value}")
        if value is not None and (value <= low if strict else value < low):
            p.error(f"{flag} must be {'positive' if strict else 'non-negative'}, but got {value}")
    if args.seed < 0:  # NumPy's generators take non-negative seeds only
        p.error(f"--seed must be non-negative, but got {args.seed}")


def limited(x, y, n):
    return (x, y) if n is None else (x[:n], y[:n])


# Batches between the reports that bring the losses back from the device: the only moments a
# training epoch waits for the GPU (and the latest at which a non-finite loss stops the run).
REPORT_EVERY = 50


class Report:
    """What an epoch's steps leave on the device (each batch's loss and correct predictions),
    brought back at a report: one transfer each, checked and added up in the order of the
    batches, so the numbers are the same whenever the reports come."""

    def __init__(self, desc):
        self.desc, self.pending = desc, []
        self.loss_sum, self.correct, self.last_loss = 0.0, 0, None

    def add(self, batch, loss, correct, images):
        self.pending.append((batch, loss, correct, images))

    def settle(self):
        """Raise Diverged naming the first batch whose loss is not finite; else add them up."""
        if not self.pending:
            return
        batches, losses, correct, images = zip(*self.pending)
        self.pending = []
        losses, correct = cuda.scalars(list(losses)), cuda.scalars(list(correct))
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise Diverged(f"the training loss became {float(losses[bad[0]])} at batch {batches[bad[0]]} of {self.desc}")
        for loss, n in zip(losses, images):
            self.loss_sum += float(loss) * n
        self.correct += int(correct.sum())
        self.last_loss = float(losses[-1])


def run_epoch(model, criterion, optimizer, x, y, config, rng, device, desc, augmenter=None, world=None):
    """One pass over the training images in a shuffled order, each batch through augmenter
    when there is one; (mean loss, accuracy) as it trained. With a `world`, model is a
    DistributedDataParallel and this rank takes its share of each batch.

    The losses stay on the device until a report (every REPORT_EVERY batches and at the end
    of the epoch), so no step waits for the GPU. A report that finds a loss that is not finite
    raises Diverged naming its batch: the steps taken after it are lost with the epoch, whose
    weights are never saved."""
    model.train()
    batches = data.batch_indices(len(x), config["batch_size"], rng)
    if world is not None:
        batches = distributed.shard_batches(batches, world.rank, world.size)
    report = Report(desc)
    bar = tqdm(batches, desc=desc, leave=False, unit="batch", disable=not sys.stderr.isatty())
    for batch, idx in enumerate(bar, 1):
        if len(idx) == 0:  # this rank's share of a last batch with fewer images than ranks
            optimizer.zero_grad()
            model.backward(None)  # still joins the gradient all-reduce
            optimizer.step()
        else:
            images = x[idx] if augmenter is None else augmenter(x[idx])
            xb = cuda.to_device(data.normalize(images, config["max_value"], config["mean"], config["std"]), device)
            yb = cuda.to_device(y[idx], device)
            optimizer.zero_grad()
            logits = model(xb)
            loss = criterion(logits, yb)
            model.backward(criterion.backward(), input_grad=False)  # the images need no gradient
            optimizer.step()
            report.add(batch, loss, (logits.argmax(axis=1) == yb).sum(), len(idx))
        if batch % REPORT_EVERY == 0 or batch == len(batches):
            report.settle()
            if report.last_loss is not None and not bar.disable:
                bar.set_postfix(loss=f"{report.last_loss:.4f}")
    loss_sum, correct = report.loss_sum, report.correct
    if world is not None:
        loss_sum, correct = world.sum(loss_sum, correct)
    return loss_sum / len(x), correct / len(x)


def write_metrics(path, rows):
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRICS)
    writer.writeheader()
    writer.writerows(rows)
    files.write_atomic(path, text.getvalue().encode())


def fresh_config(args):
    """The run's config from the command line; `describe_data` adds what the data says."""
    return {
        "dataset": args.dataset, "data_dir": args.data_dir, "arch": " ".join(arch.resolve(args.arch).split()),
        "epochs": args.epochs or DEFAULT_EPOCHS, "batch_size": args.batch_size, "optimizer": args.optimizer,
        "lr": args.lr if args.lr is not None else DEFAULT_LR[args.optimizer], "momentum": args.momentum,
        "weight_decay": args.weight_decay if args.weight_decay is not None else DEFAULT_WEIGHT_DECAY[args.optimizer],
        "schedule": args.schedule, "seed": args.seed,
        "limit_train": args.limit_train, "limit_test": args.limit_test, **recipe.config_of(args),
    }


DATA_KEYS = ("in_shape", "classes", "max_value", "mean", "std")  # what describe_data adds


def describe_data(config, dataset, x_train):
    """Input shape, class names and the training images' statistics, which fix the preprocessing."""
    mean, std = data.channel_stats(x_train, dataset.max_value)
    config.update(in_shape=list(x_train.shape[1:]), classes=dataset.classes, max_value=dataset.max_value,
                  mean=mean, std=std)


def resumed_config(args, resumed):
    """The checkpoint's config; --epochs (not below the epochs done) and --data-dir, when given, replace the stored ones."""
    config = resumed["config"]
    if args.epochs is not None and args.epochs < resumed["epoch"]:
        raise ValueError(f"--epochs {args.epochs} is fewer than the {resumed['epoch']} epochs the run in "
                         f"{args.out} has done already")
    config["epochs"] = args.epochs or config["epochs"]
    config["data_dir"] = args.data_dir or config["data_dir"]
    return config


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


def check_resumed_config(args, config):
    """A stored config must have every setting a fresh run would record (else: another gpucnn's checkpoint)."""
    missing = sorted((set(fresh_config(args)) | set(DATA_KEYS)) - set(config))
    if missing:
        raise checkpoint.CheckpointError(
            f"the checkpoint in {args.out} has no {', '.join(missing)} in its config; it was not written "
            f"by this version of gpucnn-train and cannot be resumed")


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


def summarize(out, rows, x_train, x_test, config, device):
    """metrics.json's content: the last epoch's numbers, the run's totals and its config."""
    return {
        "test_accuracy": float(rows[-1]["test_accuracy"]), "test_loss": float(rows[-1]["test_loss"]),
        "train_accuracy": float(rows[-1]["train_accuracy"]), "train_loss": float(rows[-1]["train_loss"]),
        "epochs": int(rows[-1]["epoch"]), "train_images": len(x_train), "test_images": len(x_test),
        "seconds": round(sum(float(r["seconds"]) for r in rows), 3),
        "median_images_per_second": float(np.median([float(r["images_per_second"]) for r in rows])),
        "device": device, "checkpoint": checkpoint.latest(out), "config": config,
    }


def train(parser, args, device, world):
    """The run itself, in a run folder that `main` holds (rank 0's, in a distributed run: the
    other ranks train their shares, and rank 0 alone writes)."""
    out = args.out
    writes = world is None or world.is_root
    try:
        if not args.no_plots and writes:
            plots.require()
        resumed = checkpoint.load_training_state(out) if args.resume else None
        if resumed:
            check_resumed_config(args, resumed["config"])
        config = resumed_config(args, resumed) if resumed else fresh_config(args)
        dataset = data.load(config["dataset"], config["data_dir"])
        x_train, y_train = limited(dataset.x_train, dataset.y_train, config["limit_train"])
        x_test, y_test = limited(dataset.x_test, dataset.y_test, config["limit_test"])
        if resumed:
            data.check_shape(x_train, config["in_shape"], f"the {config['dataset']} training images")
        else:
            describe_data(config, dataset, x_train)
        manual_seed(config["seed"])
        model = arch.build_model(config["arch"], tuple(config["in_shape"]), len(config["classes"])).to(device)
        optimizer = recipe.make_optimizer(config, model.parameters())
        if resumed:
            model.load_state_dict(resumed["weights"])
        scheduler = recipe.schedule(config, optimizer, resumed)
        augmenter = recipe.make_augment(config, resumed)
        trainee = distributed.DistributedDataParallel(model, world) if world else model
    except (ValueError, OSError, RuntimeError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")

    criterion = recipe.make_criterion(config)
    metrics_csv = os.path.join(out, "metrics.csv")
    if resumed:
        rng, start, rows = resumed["rng"], resumed["epoch"] + 1, resumed["metrics"]
        if writes:
            with runs.writing(out):
                write_metrics(metrics_csv, rows)  # drops any row of an epoch killed before its checkpoint
    else:
        rng, start, rows = np.random.default_rng(config["seed"]), 1, []

    n_params = sum(p.data.size for p in model.parameters())
    print(f"{config['dataset']}: {len(x_train)} training and {len(x_test)} held-out test images of "
          f"{'x'.join(map(str, config['in_shape']))}, {len(config['classes'])} classes")
    print(f"model: {config['arch']} ({n_params:,} parameters) on {device}; {config['optimizer']} lr {config['lr']:g} "
          f"({config['schedule']}), batch {config['batch_size']}, seed {config['seed']}")
    if world:
        print(f"data parallel over {world.size} ranks: each takes 1/{world.size} of every batch of {config['batch_size']}")
    if start > config["epochs"]:
        print(f"the run in {out} has done all its {config['epochs']} epochs; --epochs N (more than "
              f"{config['epochs']}) trains on")
    else:
        print(("resuming at" if args.resume else "training from") + f" epoch {start} of {config['epochs']}; run folder {out}")

    eval_batch = max(config["batch_size"], 500)
    for epoch in range(start, config["epochs"] + 1):
        t0 = time.perf_counter()
        train_loss, train_acc = run_epoch(trainee, criterion, optimizer, x_train, y_train, config, rng, device,
                                          desc=f"epoch {epoch}/{config['epochs']}", augmenter=augmenter, world=world)
        train_seconds = time.perf_counter() - t0
        model.eval()
        test_loss, test_acc = held_out_metrics(model, x_test, y_test, config, eval_batch, device, world)
        if not math.isfinite(test_loss):  # the last step made the weights overflow
            raise Diverged(f"the test loss became {test_loss} after epoch {epoch}")
        if not all(np.isfinite(cuda.as_numpy(p.data)).all() for p in model.parameters()):
            raise Diverged(f"a weight became NaN or infinite in epoch {epoch}")
        row = {"epoch": epoch, "lr": f"{optimizer.lr:.6g}", "train_loss": f"{train_loss:.6f}",
               "train_accuracy": f"{train_acc:.6f}", "test_loss": f"{test_loss:.6f}", "test_accuracy": f"{test_acc:.6f}",
               "images_per_second": f"{len(x_train) / train_seconds:.1f}", "seconds": f"{time.perf_counter() - t0:.3f}"}
        rows.append(row)
        scheduler.step()  # the next epoch's lr, saved with the optimizer
        if writes:
            with runs.writing(out):
                checkpoint.save(out, model, optimizer, epoch, rng, config, rows,
                                states=recipe.states(config, scheduler, augmenter))
                if epoch == 1:  # this run's first checkpoint is in place: an earlier run's outputs can go
                    runs.replace_earlier_run(out, ["metrics.json"] + PLOTS)
                write_metrics(metrics_csv, rows)
        print(f"epoch {epoch:3d}/{config['epochs']}  loss {train_loss:.4f}  train {100 * train_acc:6.2f}%  "
              f"test {100 * test_acc:6.2f}%  {len(x_train) / train_seconds:7.0f} img/s  {row['seconds']} s", flush=True)

    if not writes:
        return 0
    summary = summarize(out, rows, x_train, x_test, config, device)
    with runs.writing(out):
        files.write_atomic(os.path.join(out, "metrics.json"),
                                (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())
        drawn = [] if args.no_plots else save_plots(out, model, rows, x_test, y_test, config, device)
        runs.replace_earlier_run(out, [name for name in PLOTS if name not in drawn])  # stale: not of these weights
    print(f"test accuracy {100 * summary['test_accuracy']:.2f}% on {len(x_test)} held-out images "
          f"after {summary['epochs']} epochs ({summary['seconds']:.1f} s)")
    written = ["metrics.csv", "metrics.json"] + drawn
    print(f"wrote {', '.join(written)} in {out}; weights in {os.path.join(summary['checkpoint'], checkpoint.MODEL_FILE)}")
    return 0


@distributed.abort_on_error
def main(argv=None):
    parser, args = parse_args(argv)
    fail = f"{parser.prog}: error:"
    try:
        device = cuda.check_device(args.device or cuda.default_device())
        world = start_distributed(args, device)
    except (ValueError, RuntimeError) as e:
        parser.exit(2, f"{fail} {e}\n")
    # One process holds the run folder: the only one, or rank 0 of a distributed run.
    holding = runs.claim(args.out, args.resume, args.overwrite) if world is None or world.is_root else nullcontext()
    try:
        # A diverging run is reported once, as Diverged, not as NumPy's overflow warnings on the way.
        with holding, np.errstate(over="ignore", invalid="ignore"):
            return train(parser, args, device, world)
    except (runs.RunFolderError, cuda.DeviceSetupError) as e:  # a kernel module NVRTC refuses: at its first launch
        parser.exit(2, f"{fail} {e}\n")
    except Diverged as e:
        kept = checkpoint.latest(args.out)
        parser.exit(1, f"{fail} {e}; stopped without saving it (try a smaller --lr). "
                       f"{'The last finite checkpoint is kept: ' + kept if kept else 'No checkpoint was saved.'}\n")


if __name__ == "__main__":
    sys.exit(main())
