"""Losses: `loss = crit(input, target)` returns a Python float, `crit.backward()` d loss / d input."""
from .. import functional as F
from ..cuda import get_array_module
from .module import Module


class CrossEntropyLoss(Module):
    """Softmax + negative log-likelihood of integer class labels, averaged over the batch."""

    def __init__(self):
        super().__init__()
        self._probs = None

    def forward(self, logits, target):
        F.cross_entropy_args("CrossEntropyLoss", logits, target)
        xp = get_array_module(logits)
        logp = F.log_softmax(logits, axis=1)
        self._probs, self._target = xp.exp(logp), target
        return float(-logp[xp.arange(len(target)), target].mean())

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def backward(self, dy=1.0):
        """(softmax - one_hot) / N, times dy (the gradient of whatever was built on the loss)."""
        probs = self.saved("_probs")
        xp = get_array_module(probs)
        grad = probs.copy()
        grad[xp.arange(len(self._target)), self._target] -= 1
        return grad * (dy / len(self._target))


class MSELoss(Module):
    """Mean of the squared differences, as torch.nn.MSELoss(reduction="mean")."""

    def __init__(self):
        super().__init__()
        self._diff = None

    def forward(self, x, target):
        F.mse_args("MSELoss", x, target)
        self._diff, self._dtype = x - target, x.dtype
        return float((self._diff ** 2).mean())

    def __call__(self, x, target):
        return self.forward(x, target)

    def backward(self, dy=1.0):
        diff = self.saved("_diff")
        # A float64 target promotes diff; the gradient still takes the input's dtype, as in torch.
        return (diff * (2.0 * dy / diff.size)).astype(self._dtype, copy=False)
