"""Networks of the seeds' family  INPUT -> [[CONV]*N -> POOL?]*M -> [FC]*K  from a short spec.

A spec is a string of space-separated layers, read left to right:

    conv<C>k<K>[s<S>][p<P>]   Conv2d to C channels, K x K kernel, stride S (1), padding P (0), then ReLU
    pool<K>[s<S>]             MaxPool2d, K x K window, stride S (K)
    avgpool<K>[s<S>]          AvgPool2d, likewise
    fc<N>                     Linear to N features, then ReLU (Flatten comes before the first one)

Convolutions and pools come first, fully connected layers last; the classifier,
Linear(features, num_classes), is appended. So LeNet-5 is

    conv6k5p2 pool2 conv16k5p2 pool2 fc120 fc84

which, padded, fits 8x8 digits as well as 28x28 MNIST and 32x32 CIFAR-10 images.
"""
import re

from . import checks
from . import nn

PRESETS = {
    "lenet5": "conv6k5p2 pool2 conv16k5p2 pool2 fc120 fc84",
    # LeNet-5's layout with 3x3 kernels and twice the filters, a better fit for 8x8 digits,
    # where a 5x5 kernel covers most of the image: 98.1-99.2% on them (3 seeds x 2 splits) against
    # LeNet-5's 97.5-98.6%.
    "lenet5-3x3": "conv16k3p1 pool2 conv32k3p1 pool2 fc120 fc84",
    "vgg": "conv32k3p1 conv32k3p1 pool2 conv64k3p1 conv64k3p1 pool2 fc128",
}

_CONV = re.compile(r"conv(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?")
_POOL = re.compile(r"(avg)?pool(\d+)(?:s(\d+))?")
_FC = re.compile(r"fc(\d+)")


def resolve(arch):
    """The spec of a preset name, or the spec itself."""
    return PRESETS.get(arch, arch)


def _positive(token, what, text):
    value = int(text)
    if value <= 0:
        raise ValueError(f"arch: {what} in {token!r} must be positive, but got {value}")
    return value


def build_model(arch, in_shape, num_classes):
    """nn.Sequential for `arch` (a preset name or a spec) on inputs of shape (C, H, W)."""
    spec = resolve(arch)
    tokens = spec.split()
    if not tokens:
        raise ValueError(f"arch: expected a preset name ({', '.join(PRESETS)}) or a layer spec, but got {arch!r}")
    channels, height, width = in_shape
    layers, features = [], None  # features: set once the fully connected part has begun
    for position, token in enumerate(tokens, 1):
        where = (position, token, height, width)  # for _check_size's message
        conv, pool, fc = _CONV.fullmatch(token), _POOL.fullmatch(token), _FC.fullmatch(token)
        if (conv or pool) and features is not None:
            raise ValueError(
                f"arch: {token!r} comes after a fully connected layer; the family is "
                f"INPUT -> [[CONV]*N -> POOL?]*M -> [FC]*K, so convolutions and pools come first")
        if conv:
            out = _positive(token, "channels", conv[1])
            k = _positive(token, "kernel size", conv[2])
            s = _positive(token, "stride", conv[3] or "1")
            p = int(conv[4] or 0)
            height, width = (checks.output_size(d, k, s, p) for d in (height, width))
            _check_size(where, height, width, in_shape)
            layers += [nn.Conv2d(channels, out, k, stride=s, padding=p), nn.ReLU()]
            channels = out
        elif pool:
            k = _positive(token, "window", pool[2])
            s = _positive(token, "stride", pool[3] or pool[2])
            height, width = (checks.output_size(d, k, s, 0) for d in (height, width))
            _check_size(where, height, width, in_shape)
            layers.append(nn.AvgPool2d(k, s) if pool[1] else nn.MaxPool2d(k, s))
        elif fc:
            if features is None:
                features = channels * height * width
                layers.append(nn.Flatten())
            out = _positive(token, "features", fc[1])
            layers += [nn.Linear(features, out), nn.ReLU()]
            features = out
        else:
            raise ValueError(
                f"arch: unknown layer {token!r} in {spec!r}; expected conv<C>k<K>[s<S>][p<P>], "
                f"pool<K>[s<S>], avgpool<K>[s<S>] or fc<N>")
    if features is None:
        features = channels * height * width
        layers.append(nn.Flatten())
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def _check_size(where, height, width, in_shape):
    position, token, in_height, in_width = where
    if height < 1 or width < 1:
        raise ValueError(
            f"arch: {token!r} (layer {position} of the spec) leaves no output (size {height}x{width}): it gets a "
            f"{in_height}x{in_width} input from images of shape {checks.shape_str(in_shape)}; use padding, "
            f"a smaller kernel or fewer pools")
