"""The training recipe of gpucnn.train: optimizer, learning-rate schedule, loss and data
augmentation, each built from the run's config, and the command-line flags that set them.

The schedule is per epoch: --warmup W epochs rising linearly to --lr (W + 1 equal steps:
lr/(W+1), 2lr/(W+1), ...), then cosine decay towards 0 over the remaining epochs, or the
constant --lr. It is a gpucnn.optim.lr_scheduler scheduler whose state goes into the
checkpoint with the augmentation generator's and the dropout masks' stream's, so --resume
continues all three exactly.
"""
import argparse

from . import augment, nn, optim, rng
from .optim import lr_scheduler


def add_arguments(p):
    """The recipe's flags beyond --optimizer, --lr, --momentum, --weight-decay and --schedule."""
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD only)")
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                   help="mix EPS of the uniform distribution into the targets of the training loss (default: 0)")
    p.add_argument("--warmup", type=int, default=0, metavar="EPOCHS",
                   help="epochs of linear warmup up to --lr before the schedule (default: 0)")
    p.add_argument("--augment", action="store_true",
                   help="random crops (padding an eighth of the image side) and, except for digits, "
                        "horizontal flips; --crop-padding and --hflip/--no-hflip set them one by one")
    p.add_argument("--crop-padding", type=int, default=None, metavar="P",
                   help="random crops of the images padded with P zeros (default: 0, or the --augment value)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: off, or the --augment value)")


def check_arguments(p, args, epochs):
    """Refuse settings the recipe cannot run, as one-line CLI errors."""
    if args.nesterov and args.optimizer != "sgd":
        p.error(f"--nesterov is a momentum of SGD, but --optimizer is {args.optimizer}")
    if args.nesterov and args.momentum == 0:
        p.error("--nesterov needs a momentum, but --momentum is 0")
    if not 0.0 <= args.label_smoothing <= 1.0:
        p.error(f"--label-smoothing must be between 0 and 1, but got {args.label_smoothing}")
    if args.crop_padding is not None and args.crop_padding < 0:
        p.error(f"--crop-padding must be non-negative, but got {args.crop_padding}")
    if args.warmup < 0 or args.warmup >= epochs:
        p.error(f"--warmup must be non-negative and fewer than the --epochs ({epochs}), but got {args.warmup}")


def config_of(args):
    """The recipe's entries of a fresh run's config; --augment resolved to its values."""
    padding, hflip = augment.DATASET_DEFAULTS[args.dataset] if args.augment else (0, False)
    return {
        "nesterov": args.nesterov, "label_smoothing": args.label_smoothing, "warmup": args.warmup,
        "crop_padding": padding if args.crop_padding is None else args.crop_padding,
        "hflip": hflip if args.hflip is None else args.hflip,
    }


def make_optimizer(config, params):
    name, lr, wd = config["optimizer"], config["lr"], config["weight_decay"]
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=wd)
    return optim.SGD(params, lr=lr, momentum=config["momentum"], weight_decay=wd,
                     nesterov=config.get("nesterov", False))


def make_criterion(config):
    # The labels were checked when the data set loaded: checking them again on the device
    # would make every step wait for the GPU.
    return nn.CrossEntropyLoss(label_smoothing=config.get("label_smoothing", 0.0), validate_args=False)


def _make_scheduler(config, optimizer):
    warmup, epochs = config.get("warmup", 0), config["epochs"]
    if config["schedule"] == "cosine":
        after = lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup)
    else:  # constant: a factor going from 1 to 1
        after = lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=1.0, total_iters=1)
    if not warmup:
        return after
    rise = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [rise, after], milestones=[warmup])


def schedule(config, optimizer, resumed=None):
    """The optimizer's per-epoch scheduler; it has set the lr of the first epoch to train.

    Resuming, the optimizer's stored state is loaded too, in torch's order (scheduler
    built first), and the stored scheduler state continues exactly. A run that --epochs
    lengthened has a new schedule: it is replayed from the start up to the epoch reached."""
    if resumed is None:
        return _make_scheduler(config, optimizer)
    stored = resumed.get("states", {}).get("schedule")
    if stored is not None and stored["epochs"] == config["epochs"]:
        scheduler = _make_scheduler(config, optimizer)
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(stored["state"])
        return scheduler
    optimizer.load_state_dict(resumed["optimizer"])
    optimizer.hyper.pop("initial_lr", None)
    optimizer.lr = config["lr"]
    scheduler = _make_scheduler(config, optimizer)
    for _ in range(resumed["epoch"]):
        scheduler.step()
    return scheduler


def make_augment(config, resumed=None):
    """The run's Augment (or None); resuming, it and the dropout masks' stream (gpucnn.rng,
    which manual_seed restarted) continue where the checkpoint left them."""
    stored = resumed.get("states", {}) if resumed else {}
    if "dropout" in stored:
        rng.set_state(stored["dropout"])
    return augment.from_config(config, stored.get("augment"))


def states(config, scheduler, augmenter):
    """What the checkpoint keeps of the recipe for --resume: JSON-ready."""
    kept = {"schedule": {"epochs": config["epochs"], "state": scheduler.state_dict()}, "dropout": rng.state()}
    if augmenter is not None:
        kept["augment"] = augmenter.state_dict()
    return kept
