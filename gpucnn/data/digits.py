"""The default data set: scikit-learn's 1,797 handwritten digits, 8x8, shipped inside its wheel.

Pixels are ink counts 0..16 (each pixel of the 8x8 image sums a 4x4 block of a 32x32
bitmap). The test split, a fixed stratified fifth, never depends on --seed, so every run
is judged on the same 360 images and never trains on them.
"""
import numpy as np

from .. import extras

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_split(split):
    """(images uint8 0..16 (N, 1, 8, 8), labels int64 (N,)) of the 'train' or 'test' split."""
    datasets = extras.require("sklearn.datasets", "scikit-learn", "train", "the digits data set")
    model_selection = extras.require("sklearn.model_selection", "scikit-learn", "train", "the digits data set")

    digits = datasets.load_digits()
    images = digits.images.astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = model_selection.train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    return (train_x, train_y) if split == "train" else (test_x, test_y)
