"""Losses: `loss = crit(input, target)` returns a Python float (or, with reduction='none', an array),
`crit.backward()` d loss / d input."""
from .. import checks, cuda, functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss with class-index targets: softmax + negative log-likelihood,
    `weight` per class, rows whose target is `ignore_index` left out, `label_smoothing` mixing
    in the uniform distribution. reduction 'mean' divides by the summed weights of the rows
    kept; 'mean' and 'sum' return a Python float, 'none' an (N,) array whose backward takes an
    (N,) dy. Arguments after weight are keyword-only: torch's positional ones in between
    (size_average, reduce) are deprecated there and absent here."""

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        F.cross_entropy_options("CrossEntropyLoss", weight, ignore_index, reduction, label_smoothing)
        # A buffer, as in torch: .to() moves it, .float()/.double() cast it, state_dict() holds it.
        self.register_buffer("weight", weight)
        self.ignore_index = int(ignore_index)
        self.reduction, self.label_smoothing = reduction, float(label_smoothing)
        self._saved = None

    def forward(self, logits, target):
        F.cross_entropy_args("CrossEntropyLoss", logits, target, self.weight, self.ignore_index)
        loss, self._saved = F.cross_entropy_forward(logits, target, self.weight, self.ignore_index,
                                                    self.reduction, self.label_smoothing)
        return loss

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def backward(self, dy=1.0):
        """d loss / d logits times dy (the gradient of whatever was built on the loss): a number
        for 'mean' and 'sum', an array shaped like the (N,) loss for 'none'."""
        saved = self.saved("_saved")
        probs = saved["probs"]
        if self.reduction == "none":
            cuda.check_same_device("CrossEntropyLoss.backward", dy=dy, input=probs)
            checks.gradient("CrossEntropyLoss", dy, probs.shape[:1], probs.dtype)
        return F.cross_entropy_backward(saved, dy, self.reduction, self.label_smoothing)

    def extra_repr(self):
        return (f"weight={'None' if self.weight is None else checks.shape_str(self.weight.shape)}, "
                f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, label_smoothing={self.label_smoothing}")


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
