"""MNIST and Fashion-MNIST in their original IDX files (raw, or gzipped as distributed).

The files go by their distributed names (train-images-idx3-ubyte), or with a dot before
"idx" as some mirrors name them (train-images.idx3-ubyte), each with or without .gz; a
gzipped file is recognized by its first bytes, whatever its name.

An IDX file is two zero bytes, a type byte (0x08: unsigned byte), the number of
dimensions, each dimension as a big-endian uint32, then the data row-major.
Images are idx3 (N, 28, 28), labels idx1 (N,).
"""
import gzip
import os

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
UNSIGNED_BYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path):
    """The file's bytes, ungzipped when they are gzip's (by their magic bytes, not the name); a
    truncated gzip file is a ValueError."""
    with open(path, "rb") as f:
        if f.read(2) != GZIP_MAGIC:
            f.seek(0)
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        raise ValueError(f"{path}: not a complete gzip file ({e})") from None


def read_idx(path, ndim):
    """The array in an IDX file of unsigned bytes with `ndim` dimensions."""
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file: expected magic bytes 00 00, but got {data[:2].hex(' ') or 'nothing'}")
    if data[2] != UNSIGNED_BYTE or data[3] != ndim:
        magic = int.from_bytes(data[:4], "big")
        raise ValueError(
            f"{path}: expected IDX magic number {UNSIGNED_BYTE << 8 | ndim:#010x} (unsigned bytes, {ndim}D), "
            f"but got {magic:#010x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header: expected {header} bytes, but the file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape}, so {expected} bytes, but the file has {len(data)}"
            + (" (truncated)" if len(data) < expected else ""))
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def find(data_dir, name):
    """data_dir/name, or its dot-named variant (train-images.idx3-ubyte), either with .gz: the first that exists."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{os.path.join(data_dir, name)}[.gz] not found (nor {dotted}[.gz])")


def load_split(data_dir, split):
    """(images uint8 (N, 1, 28, 28), labels int64 (N,)) of the 'train' or 'test' split."""
    images_name, labels_name = FILES[split]
    images_path, labels_path = find(data_dir, images_name), find(data_dir, labels_name)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be 0..9, but got {int(labels.max())}")
    return images[:, None], labels.astype(np.int64)
