"""Optional dependencies, imported when first needed, with one line saying how to get them.

A plain install has NumPy, safetensors, threadpoolctl and tqdm only: enough for the layers,
the optimizers and checkpoints. The training command's default data (scikit-learn's digits)
and plots (matplotlib), and predict's image reading (Pillow) come with the "train" extra.
"""
import importlib

# gpucnn is installed from a clone (it is not on PyPI); `pip install "gpucnn[train]"` would fail.
INSTALL = 'pip install -e ".[{extra}]" in a clone of gpucnn, or pip install {package}'


class MissingExtra(RuntimeError):
    """An optional dependency is not installed."""


def require(module, package, extra, purpose):
    """Import and return `module`, or raise MissingExtra naming the package and the extra that has it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{purpose} needs {package}, which is not installed: "
                           f"{INSTALL.format(extra=extra, package=package)}") from None
