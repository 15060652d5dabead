"""Data loaders on tiny files written here in the real formats, good and broken."""
import gzip
import struct

import numpy as np
import pytest

from gpucnn import data
from gpucnn.data import cifar, digits, idx


def idx_bytes(array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=5, n_test=3, gz=False, size=28, test_size=None, suffix="", dotted=False):
    rng = np.random.default_rng(0)
    test_size = test_size or size
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, test_size, test_size)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, a in arrays.items():
        raw = idx_bytes(a)
        file = (name.replace("-idx", ".idx") if dotted else name) + suffix
        (folder / file).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz, suffix, dotted", [(False, "", False), (True, ".gz", False), (True, "", False),
                                                (False, "", True), (True, ".gz", True)],
                         ids=["raw", "gz", "gzip-without-.gz", "dot-named", "dot-named-gz"])
def test_mnist_idx_files_load_raw_or_gzipped(tmp_path, gz, suffix, dotted):
    arrays = write_mnist(tmp_path, gz=gz, suffix=suffix, dotted=dotted)
    ds = data.load("mnist", str(tmp_path))
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_test.dtype == np.int64 and ds.classes[0] == "0"
    assert data.load("fashion-mnist", str(tmp_path)).classes[9] == "Ankle boot"


def test_idx_bad_magic_is_a_clear_error(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float data, not unsigned bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: expected IDX magic number 0x00000803.*0x00000d03"):
        data.load("mnist", str(tmp_path))
    path.write_bytes(b"\x12\x34" + bytes(raw[2:]))
    with pytest.raises(ValueError, match="not an IDX file"):
        idx.read_idx(str(path), 3)


def test_idx_labels_file_where_images_belong(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match="0x00000803.*0x00000801"):
        idx.read_idx(str(tmp_path / "train-labels-idx1-ubyte"), 3)


def test_idx_truncated_raw_and_gz(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"shape \(3, 28, 28\), so 2368 bytes, but the file has 2268 \(truncated\)"):
        data.load("mnist", str(tmp_path))
    path.write_bytes(raw[:10])
    with pytest.raises(ValueError, match="truncated IDX header"):
        idx.read_idx(str(path), 3)
    path.unlink()
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(raw)[:-30])
    with pytest.raises(ValueError, match="not a complete gzip file"):
        data.load("mnist", str(tmp_path))


def test_idx_count_mismatch_and_missing_files(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(ValueError, match="has 3 images but .* has 2 labels"):
        data.load("mnist", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\[\.gz\] not found"):
        data.load("mnist", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="pass --data-dir"):
        data.load("mnist")
    with pytest.raises(ValueError, match="dataset must be one of digits, mnist, fashion-mnist, cifar10, but got 'svhn'"):
        data.load("svhn")


def cifar_records(labels, rng):
    images = rng.integers(0, 256, (len(labels), 3, 32, 32))
    raw = b"".join(bytes([label]) + img.astype(np.uint8).tobytes() for label, img in zip(labels, images))
    return images, raw


def test_cifar_binary_batches(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = []
    for name in cifar.TRAIN_FILES:
        images, raw = cifar_records([1, 9], rng)
        (folder / name).write_bytes(raw)
        expected.append(images)
    test_images, raw = cifar_records([3, 0, 7], rng)
    (folder / "test_batch.bin").write_bytes(raw)
    ds = data.load("cifar10", str(tmp_path))  # the parent folder is found too
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.y_train.tolist() == [1, 9] * 5
    np.testing.assert_array_equal(ds.x_train, np.concatenate(expected))
    np.testing.assert_array_equal(ds.x_test, test_images)
    assert ds.y_test.tolist() == [3, 0, 7] and ds.classes[3] == "cat"


def test_cifar_truncated_bad_label_and_pickled_version(tmp_path):
    rng = np.random.default_rng(2)
    _, raw = cifar_records([1, 2], rng)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="records of 3073 bytes, but its size 6141 is not a positive multiple"):
        cifar.read_batch(str(path))
    _, raw = cifar_records([1, 12], rng)
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="record 1 has label 12; CIFAR-10 labels are 0..9"):
        cifar.read_batch(str(path))
    pickled = tmp_path / "py" / "cifar-10-batches-py"
    pickled.mkdir(parents=True)
    (pickled / "test_batch").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pickled Python version of CIFAR-10, which gpucnn never loads"):
        data.load("cifar10", str(tmp_path / "py"))


def test_digits_split_is_fixed_stratified_and_disjoint():
    ds = data.load("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.max() == 16
    assert np.bincount(ds.y_test).min() >= 35  # every digit is tested, ~36 each
    train_rows = {row.tobytes() + bytes([lab]) for row, lab in zip(ds.x_train, ds.y_train)}
    test_rows = {row.tobytes() + bytes([lab]) for row, lab in zip(ds.x_test, ds.y_test)}
    assert len(train_rows & test_rows) <= 2  # the data set itself holds a few duplicate images
    np.testing.assert_array_equal(digits.load_split("test")[1], ds.y_test)


def test_normalize_uses_training_statistics():
    x = np.array([[[[0, 16], [8, 8]]]], dtype=np.uint8)
    mean, std = data.channel_stats(x, 16)
    assert mean == [0.5] and np.isclose(std[0], np.sqrt(0.125))
    z = data.normalize(x, 16, mean, std)
    assert z.dtype == np.float32 and np.isclose(z.mean(), 0) and np.isclose(z.std(), 1)


def test_batch_indices_cover_every_image_once_in_a_seeded_order():
    a = data.batch_indices(10, 4, np.random.default_rng(3))
    b = data.batch_indices(10, 4, np.random.default_rng(3))
    assert [len(i) for i in a] == [4, 4, 2]
    assert sorted(np.concatenate(a).tolist()) == list(range(10))
    assert all((x == y).all() for x, y in zip(a, b))
    assert np.concatenate(data.batch_indices(5, 2)).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="batch_size must be positive, but got 0"):
        data.batch_indices(5, 0)


@pytest.mark.parametrize("split, counts", [("train", (0, 3)), ("test", (5, 0))])
def test_an_empty_split_is_refused(tmp_path, split, counts):
    write_mnist(tmp_path, *counts)
    name = "train-images-idx3-ubyte" if split == "train" else "t10k-images-idx3-ubyte"
    with pytest.raises(ValueError, match=f"the mnist {split} split \\({name} and .* in {tmp_path}\\) has no images"):
        data.load("mnist", str(tmp_path))


def test_images_of_another_size_in_the_test_split_are_refused_naming_the_files(tmp_path):
    write_mnist(tmp_path, test_size=32)
    with pytest.raises(ValueError, match=r"training images \(train-images-idx3-ubyte .*\) are 1x28x28 but the test "
                                         r"images \(t10k-images-idx3-ubyte .*\) are 1x32x32"):
        data.load("mnist", str(tmp_path))


def test_constant_images_cannot_be_normalized_and_are_refused():
    with pytest.raises(ValueError, match="the value 7 in channel 1 .standard deviation 0."):
        data.channel_stats(np.stack([np.full((3, 2, 2), 7, np.uint8)] * 4) + np.array([1, 0, 0], np.uint8)[:, None, None]
                           * np.arange(4, dtype=np.uint8)[:, None, None, None], 255)
    mean, std = data.channel_stats(np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2), 255)
    assert std[0] > 0


def test_training_on_degenerate_data_is_a_one_line_error_and_evaluate_needs_no_training_files(tmp_path, capsys):
    from gpucnn import evaluate, train

    write_mnist(tmp_path, n_train=12, n_test=4)
    flags = ["--dataset", "mnist", "--data-dir", str(tmp_path), "--arch", "fc8", "--epochs", "1", "--no-plots"]
    assert train.main([*flags, "--out", str(tmp_path / "run")]) == 0
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / name).unlink()
    capsys.readouterr()
    assert evaluate.main([str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert "mnist test split: 4 images" in capsys.readouterr().out

    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.full((12, 28, 28), 9)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(12) % 10))
    with pytest.raises(SystemExit) as e:
        train.main([*flags, "--out", str(tmp_path / "constant")])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("gpucnn-train: error: every pixel of every training image has the value 9 in "
                                       "channel 0 (standard deviation 0): these images cannot be normalized or learned from\n")
