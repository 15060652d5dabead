"""CIFAR-10 in its binary version (cifar-10-binary.tar.gz, unpacked to cifar-10-batches-bin/).

Each record is one label byte (0..9) and 3072 pixel bytes: the red 32x32 plane, then
green, then blue. The Python version of the data set is pickled and is never read.
"""
import os

import numpy as np

from .idx import read_bytes

TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES


def read_batch(path):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one .bin file."""
    data = read_bytes(path)
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise ValueError(
            f"{path}: a CIFAR-10 binary file holds records of {RECORD_BYTES} bytes, but its size "
            f"{len(data)} is not a positive multiple of that (truncated?)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(f"{path}: record {bad} has label {int(labels[bad])}; CIFAR-10 labels are 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def batches_dir(data_dir):
    """The folder holding the .bin files: data_dir itself or its cifar-10-batches-bin/."""
    for folder in (data_dir, os.path.join(data_dir, "cifar-10-batches-bin")):
        if os.path.exists(os.path.join(folder, TEST_FILES[0])):
            return folder
    for folder in (data_dir, os.path.join(data_dir, "cifar-10-batches-py")):
        if os.path.exists(os.path.join(folder, "test_batch")):
            raise ValueError(
                f"{folder} holds the pickled Python version of CIFAR-10, which gpucnn never loads "
                f"(unpickling can run code); download the binary version, cifar-10-binary.tar.gz")
    raise FileNotFoundError(
        f"no {TEST_FILES[0]} in {data_dir} or {os.path.join(data_dir, 'cifar-10-batches-bin')}; "
        f"unpack the binary version of CIFAR-10 (cifar-10-binary.tar.gz) there")


def load_split(data_dir, split):
    folder = batches_dir(data_dir)
    parts = [read_batch(os.path.join(folder, name)) for name in (TRAIN_FILES if split == "train" else TEST_FILES)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
