"""Training-time data augmentation on uint8 image batches (N, C, H, W), before normalization:
random crops of the image padded with zeros (torchvision's RandomCrop(size, padding)) and
horizontal flips (RandomHorizontalFlip, p = 0.5).

The draws come from a generator of their own, seeded by the run's seed, so a run with
augmentation shuffles its batches exactly as one without, the same seed gives the same
crops and flips, and a resumed run, its generator's state restored from the checkpoint,
draws what the uninterrupted run drew.
"""
import numpy as np

# What --augment turns on per dataset: (crop padding, horizontal flips). Flips stay off for
# digits, where a mirrored 2, 3, 4, 5, 6, 7 or 9 is no longer the digit its label says.
# The padding is an eighth of the image side: one pixel of an 8x8 digit, four of a CIFAR image.
DATASET_DEFAULTS = {"digits": (1, False), "mnist": (3, False), "fashion-mnist": (3, True), "cifar10": (4, True)}
# Seeds the augmentation generator beside the run's seed, apart from the shuffling generator.
STREAM = 1


def random_crop(x, padding, rng):
    """Each image cut at a random offset out of itself padded with `padding` zeros on every side."""
    N, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    top = rng.integers(0, 2 * padding + 1, size=N)
    left = rng.integers(0, 2 * padding + 1, size=N)
    rows = (top[:, None] + np.arange(H))[:, None, :, None]
    cols = (left[:, None] + np.arange(W))[:, None, None, :]
    return padded[np.arange(N)[:, None, None, None], np.arange(C)[None, :, None, None], rows, cols]


def random_hflip(x, rng):
    """Each image mirrored left to right with probability 1/2."""
    flip = rng.random(len(x)) < 0.5
    out = x.copy()
    out[flip] = x[flip][..., ::-1]
    return out


class Augment:
    """A batch transform: crop (when crop_padding > 0), then flip (when hflip)."""

    def __init__(self, crop_padding, hflip, rng):
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, (int, np.integer)) or crop_padding < 0:
            raise ValueError(f"Augment: crop_padding must be a non-negative int, but got crop_padding={crop_padding!r}")
        self.crop_padding, self.hflip, self.rng = int(crop_padding), bool(hflip), rng

    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"Augment: expected images (N, C, H, W), but got an array of shape {list(x.shape)}")
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, self.rng)
        if self.hflip:
            x = random_hflip(x, self.rng)
        return x

    def state_dict(self):
        """The generator's state (JSON-ready), which is all an Augment changes as it runs."""
        return self.rng.bit_generator.state

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state


def from_config(config, state=None):
    """The run's Augment (None when it augments nothing), its generator fresh from the seed,
    or restored to `state` when resuming."""
    padding, hflip = config.get("crop_padding", 0), config.get("hflip", False)
    if not padding and not hflip:
        return None
    augment = Augment(padding, hflip, np.random.default_rng([config["seed"], STREAM]))
    if state is not None:
        augment.load_state_dict(state)
    return augment
