"""Data sets by name, as uint8 images (N, C, H, W) and int64 labels, with the one
preprocessing that training, evaluation and prediction share.

    digits         scikit-learn's 8x8 digits, inside its wheel: works offline, the default
    mnist          MNIST IDX files in --data-dir
    fashion-mnist  Fashion-MNIST IDX files in --data-dir
    cifar10        CIFAR-10 binary version in --data-dir
"""
from dataclasses import dataclass

import numpy as np

from . import cifar, digits, idx
from .batches import batch_indices

DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@dataclass(frozen=True)
class Source:
    load_split: object  # (data_dir, "train" | "test") -> (uint8 images, int64 labels)
    max_value: int      # the value of full ink / full brightness
    classes: list
    needs_data_dir: bool


SOURCES = {
    "digits": Source(lambda data_dir, split: digits.load_split(split), 16, DIGIT_CLASSES, False),
    "mnist": Source(idx.load_split, 255, DIGIT_CLASSES, True),
    "fashion-mnist": Source(idx.load_split, 255, FASHION_CLASSES, True),
    "cifar10": Source(cifar.load_split, 255, cifar.CLASSES, True),
}


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # uint8 (N, C, H, W)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list
    max_value: int


def source(name):
    if name not in SOURCES:
        raise ValueError(f"dataset must be one of {', '.join(SOURCES)}, but got {name!r}")
    return SOURCES[name]


def load(name, data_dir=None):
    src = source(name)
    if src.needs_data_dir and not data_dir:
        raise ValueError(f"dataset {name!r} is read from files: pass --data-dir (see README, Training)")
    x_train, y_train = src.load_split(data_dir, "train")
    x_test, y_test = src.load_split(data_dir, "test")
    return Dataset(name, x_train, y_train, x_test, y_test, list(src.classes), src.max_value)


def channel_stats(images, max_value):
    """Per-channel mean and standard deviation of the images scaled to [0, 1]."""
    x = images.astype(np.float64) / max_value
    return x.mean(axis=(0, 2, 3)).tolist(), x.std(axis=(0, 2, 3)).tolist()


def normalize(images, max_value, mean, std):
    """uint8 (or [0, max_value] float) images -> float32, zero mean and unit variance per channel
    by the training split's statistics."""
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return ((np.asarray(images, dtype=np.float32) / max_value - mean) / std).astype(np.float32)


__all__ = ["Dataset", "SOURCES", "batch_indices", "channel_stats", "load", "normalize", "source"]
