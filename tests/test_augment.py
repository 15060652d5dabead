"""Random crops with zero padding and horizontal flips: what each image becomes, drawn
from the augmentation's own generator, deterministic by seed and exact across a resume."""
import json

import numpy as np
import pytest

from gpucnn import augment


def images(n=6, c=2, h=5, w=4):
    return np.arange(1, n * c * h * w + 1, dtype=np.int64).reshape(n, c, h, w).astype(np.uint8)


def test_each_crop_is_a_window_of_the_zero_padded_image():
    x = images()
    out = augment.random_crop(x, 2, np.random.default_rng(3))
    draws = np.random.default_rng(3)
    top, left = draws.integers(0, 5, size=len(x)), draws.integers(0, 5, size=len(x))
    for n in range(len(x)):
        padded = np.zeros((2, 9, 8), np.uint8)
        padded[:, 2:7, 2:6] = x[n]
        np.testing.assert_array_equal(out[n], padded[:, top[n]:top[n] + 5, left[n]:left[n] + 4])
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert len({(t, l) for t, l in zip(top, left)}) > 1  # the offsets vary from image to image


def test_padding_zero_crops_nothing():
    x = images()
    np.testing.assert_array_equal(augment.random_crop(x, 0, np.random.default_rng(0)), x)


def test_flips_mirror_about_half_of_the_images():
    x = images(n=400, c=1, h=2, w=3)
    out = augment.random_hflip(x, np.random.default_rng(1))
    flipped = np.array([np.array_equal(o, i[..., ::-1]) for o, i in zip(out, x)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    assert (flipped ^ kept).all()
    assert 150 < flipped.sum() < 250


def test_same_seed_same_batches_and_a_restored_state_continues_exactly():
    config = {"seed": 4, "crop_padding": 1, "hflip": True}
    x = images()
    whole = augment.from_config(config)
    want = [whole(x) for _ in range(4)]
    first = augment.from_config(config)
    for i in range(2):
        np.testing.assert_array_equal(first(x), want[i])
    resumed = augment.from_config(config, json.loads(json.dumps(first.state_dict())))
    for i in range(2, 4):
        np.testing.assert_array_equal(resumed(x), want[i])
    other = augment.from_config({**config, "seed": 5})
    assert not np.array_equal(other(x), want[0])


def test_nothing_to_do_is_no_augment_and_digits_are_not_flipped():
    assert augment.from_config({"seed": 0, "crop_padding": 0, "hflip": False}) is None
    assert augment.from_config({"seed": 0}) is None  # a config from before augmentation existed
    assert augment.DATASET_DEFAULTS["digits"] == (1, False) and augment.DATASET_DEFAULTS["cifar10"] == (4, True)


@pytest.mark.parametrize("padding", [-1, 1.5, True])
def test_bad_padding_is_a_clear_error(padding):
    with pytest.raises(ValueError, match=f"Augment: crop_padding must be a non-negative int, but got crop_padding={padding!r}"):
        augment.Augment(padding, False, np.random.default_rng(0))


def test_images_must_be_a_batch():
    with pytest.raises(ValueError, match=r"Augment: expected images \(N, C, H, W\), but got an array of shape \[5, 4\]"):
        augment.Augment(1, False, np.random.default_rng(0))(images()[0, 0])
