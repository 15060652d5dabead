"""python -m gpucnn.predict CHECKPOINT IMAGE...: the class of each PNG or JPEG image.

Each image is made to look like the training data before the model sees it: greyscale or
RGB as the data set, resized to its height x width, scaled to its range of values and
normalized by the training split's statistics. The grey data sets (digits, MNIST,
Fashion-MNIST) are light strokes on a dark ground; a picture with a light ground, such as
dark ink on paper, is inverted first. A transparent ground is filled first with the shade
that what is drawn on it stands out from (white under dark strokes, black under light ones),
as a viewer shows it: dropping the alpha channel would leave black strokes on black.
"""
import argparse
import sys

import numpy as np

from . import cuda, extras
from .evaluate import load_trained, predictions


def load_image(path, config):
    """uint8-range float array (C, H, W) of an image file, preprocessed like the training images."""
    Image = extras.require("PIL.Image", "pillow", "train", "reading images")

    channels, height, width = config["in_shape"]
    try:
        with Image.open(path) as img:
            img = on_ground(img, Image)
            img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BOX)
            x = np.asarray(img, dtype=np.float64) / 255.0
    except (Image.UnidentifiedImageError, OSError) as e:
        raise ValueError(f"predict: cannot read {path} as an image ({e})") from None
    if channels == 1:
        # The border is ground: invert a light ground to the data sets' dark one.
        border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
        if border.mean() > 0.5:
            x = 1.0 - x
        x = x[None]
    else:
        x = x.transpose(2, 0, 1)
    return x * config["max_value"]


def on_ground(img, Image):
    """An image with transparency composited onto an opaque ground that contrasts with what is
    drawn (its opaque pixels' mean brightness, weighted by opacity); other images as they are."""
    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    pixels = np.asarray(rgba, dtype=np.float64) / 255.0
    alpha = pixels[..., 3]
    ink = (pixels[..., :3].mean(axis=2) * alpha).sum() / max(alpha.sum(), 1e-12)
    ground = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if ink < 0.5 else (0, 0, 0, 255))
    return Image.alpha_composite(ground, rgba).convert("RGB")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpucnn.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run folder, checkpoint folder or model.safetensors")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--top", type=int, default=3, help="how many classes to list per image")
    args = parser.parse_args(argv)
    try:
        device = cuda.check_device(args.device or cuda.default_device())
        model, config = load_trained(args.checkpoint, device)
        x = np.stack([load_image(path, config) for path in args.images])
        logits = predictions(model, x, config, 256, device).astype(np.float64)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # RuntimeError: cuda.DeviceSetupError too
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    classes = config["classes"]
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[: max(args.top, 1)]
        others = ", ".join(f"{classes[c]} {100 * p[c]:.1f}%" for c in top[1:])
        print(f"{path}: {classes[top[0]]} ({100 * p[top[0]]:.1f}%)" + (f"; then {others}" if others else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
