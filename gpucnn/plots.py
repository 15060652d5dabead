"""The pictures the seeds teach with: learning curves, the first layer's filters, and
the feature maps one input makes. PNG files through matplotlib's Agg backend (no display)."""
import math

import numpy as np

from . import extras


def require():
    """matplotlib, or MissingExtra: gpucnn.train asks before it trains, not after."""
    return extras.require("matplotlib", "matplotlib", "train", "drawing the plots (--no-plots skips them)")


def _pyplot():
    matplotlib = require()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def curves(rows, path):
    """Loss and train/test accuracy per epoch, from metrics.csv's rows."""
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in rows], label="train")
    ax_loss.plot(epochs, [float(r["test_loss"]) for r in rows], label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    ax_acc.plot(epochs, [100 * float(r["train_accuracy"]) for r in rows], label="train")
    ax_acc.plot(epochs, [100 * float(r["test_accuracy"]) for r in rows], label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grid_shape(n, max_cols=8):
    """(rows, columns) for n pictures: the most columns, up to max_cols, that leave the last row
    at least half full, so that no picture sits alone there (17 pictures: 6, 6, 5, not 8, 8, 1)."""
    cols = next(c for c in range(min(n, max_cols), 0, -1) if n % c == 0 or n % c >= c / 2)
    return math.ceil(n / cols), cols


def _grid(images, titles, path, suptitle, cmap="gray"):
    plt = _pyplot()
    rows, cols = grid_shape(len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def filters(weight, path):
    """The first convolution's filters (O, C, KH, KW): grey for one input channel, colour for three."""
    w = np.asarray(weight, dtype=np.float64)
    if w.shape[1] == 3:  # RGB filters shown as colour, each scaled to [0, 1]
        lo = w.min(axis=(1, 2, 3), keepdims=True)
        hi = w.max(axis=(1, 2, 3), keepdims=True)
        images = list(((w - lo) / np.maximum(hi - lo, 1e-12)).transpose(0, 2, 3, 1))
    else:
        images = list(w[:, 0])
    _grid(images, [f"filter {i}" for i in range(len(images))], path, "first convolution's filters")


def feature_maps(image, maps, label, path):
    """One input (C, H, W, normalized), titled with its true label, and the maps (O, H', W') a layer makes of it."""
    img = np.asarray(image, dtype=np.float64)
    shown = img[0] if img.shape[0] == 1 else ((img - img.min()) / max(np.ptp(img), 1e-12)).transpose(1, 2, 0)
    images = [shown] + list(np.asarray(maps))
    titles = [f"input, label {label}"] + [f"map {i}" for i in range(len(maps))]
    _grid(images, titles, path, "feature maps of the first convolution + ReLU", cmap="viridis")
