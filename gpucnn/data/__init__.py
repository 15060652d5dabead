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
    files: dict         # split -> the files it is read from, for error messages


_DIGITS_FILES = {split: f"scikit-learn's load_digits ({split} split)" for split in ("train", "test")}
_IDX_FILES = {split: " and ".join(names) for split, names in idx.FILES.items()}
_CIFAR_FILES = {"train": "data_batch_1.bin .. data_batch_5.bin", "test": cifar.TEST_FILES[0]}
SOURCES = {
    "digits": Source(lambda data_dir, split: digits.load_split(split), 16, DIGIT_CLASSES, False, _DIGITS_FILES),
    "mnist": Source(idx.load_split, 255, DIGIT_CLASSES, True, _IDX_FILES),
    "fashion-mnist": Source(idx.load_split, 255, FASHION_CLASSES, True, _IDX_FILES),
    "cifar10": Source(cifar.load_split, 255, cifar.CLASSES, True, _CIFAR_FILES),
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


def load_split(name, data_dir, split):
    """(images, labels) of one split ("train" or "test"); an empty split is refused."""
    src = source(name)
    if src.needs_data_dir and not data_dir:
        raise ValueError(f"dataset {name!r} is read from files: pass --data-dir (see README, Training)")
    x, y = src.load_split(data_dir, split)
    if len(x) == 0:
        where = f" in {data_dir}" if data_dir else ""
        raise ValueError(f"the {name} {split} split ({src.files[split]}{where}) has no images")
    return x, y


def load(name, data_dir=None):
    """Both splits; their images must have one size."""
    src = source(name)
    x_train, y_train = load_split(name, data_dir, "train")
    x_test, y_test = load_split(name, data_dir, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        where = f" in {data_dir}" if data_dir else ""
        raise ValueError(
            f"the {name} training images ({src.files['train']}{where}) are {shape_text(x_train.shape[1:])} but "
            f"the test images ({src.files['test']}) are {shape_text(x_test.shape[1:])}; both splits must have one size")
    return Dataset(name, x_train, y_train, x_test, y_test, list(src.classes), src.max_value)


def shape_text(shape):
    return "x".join(map(str, shape))


def check_shape(images, in_shape, what):
    """Refuse images of another size than the model was built for (C, H, W), before it runs."""
    if list(images.shape[1:]) != list(in_shape):
        raise ValueError(f"{what} are {shape_text(images.shape[1:])}, but the model was trained on "
                         f"{shape_text(in_shape)} images")


def channel_stats(images, max_value):
    """Per-channel mean and standard deviation of the images scaled to [0, 1]; a constant channel
    (standard deviation 0, nothing to learn from and a division by 0 in `normalize`) is refused."""
    if len(images) == 0:
        raise ValueError("no training images to take the normalization statistics of")
    # Exactly, on the stored values: the float std of a constant channel may round to 1e-17, not 0.
    constant = np.flatnonzero(images.min(axis=(0, 2, 3)) == images.max(axis=(0, 2, 3)))
    if constant.size:
        c = int(constant[0])
        raise ValueError(f"every pixel of every training image has the value {images[0, c, 0, 0]:g} in channel {c} "
                         f"(standard deviation 0): these images cannot be normalized or learned from")
    x = images.astype(np.float64) / max_value
    return x.mean(axis=(0, 2, 3)).tolist(), x.std(axis=(0, 2, 3)).tolist()


def normalize(images, max_value, mean, std):
    """uint8 (or [0, max_value] float) images -> float32, zero mean and unit variance per channel
    by the training split's statistics."""
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return ((np.asarray(images, dtype=np.float32) / max_value - mean) / std).astype(np.float32)


__all__ = ["Dataset", "SOURCES", "batch_indices", "channel_stats", "check_shape", "load", "load_split", "normalize",
           "shape_text", "source"]
