"""Residual connections: y = body(x) + shortcut(x), the shortcut being the identity by default."""
from .. import checks
from .module import Module


class Identity(Module):
    """y = x (a placeholder, or a shortcut spelled out). Arguments are ignored, as torch's are,
    so that it can stand in for any layer."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy


class Residual(Module):
    """body(x) + (x if shortcut is None else shortcut(x)), a ResNet block's sum.

    Backward sums the gradients of both branches. The children are named `body` and
    `shortcut` in state_dict(), in that order.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        if not isinstance(body, Module):
            raise ValueError(f"Residual: body must be a Module, but got {type(body).__name__}")
        if shortcut is not None and not isinstance(shortcut, Module):
            raise ValueError(f"Residual: shortcut must be a Module or None, but got {type(shortcut).__name__}")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        y = self.body(x)
        s = x if self.shortcut is None else self.shortcut(x)
        if y.shape != s.shape:
            raise ValueError(
                f"Residual: the body's output{checks.shape_str(y.shape)} and the shortcut's "
                f"{checks.shape_str(s.shape)} must have the same shape to be added; give the block a shortcut "
                f"that matches them (e.g. a 1x1 Conv2d with the body's stride)"
            )
        return y + s

    def backward(self, dy):
        dx = self.body.backward(dy)
        return dx + (dy if self.shortcut is None else self.shortcut.backward(dy))
