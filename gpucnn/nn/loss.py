"""Losses: `loss = crit(input, target)` returns a 0-d array on the input's device (or, with
reduction='none', an array), `crit.backward()` d loss / d input.

As torch's 0-d loss tensor, the loss stays on the device: computing it does not wait for the
GPU; float(loss), loss.item() or printing it does. A training loop that converts its losses
only when it reports (as gpucnn.train does) keeps the GPU busy between reports."""
from .. import checks, cuda, functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss with class-index targets: softmax + negative log-likelihood,
    `weight` per class, rows whose target is `ignore_index` left out, `label_smoothing` mixing
    in the uniform distribution. reduction 'mean' divides by the summed weights of the rows
    kept; 'mean' and 'sum' return a 0-d array of the logits' type and dtype, 'none' an (N,)
    array whose backward takes an (N,) dy. Arguments after weight are keyword-only: torch's
    positional ones in between (size_average, reduce) are deprecated there and absent here.

    validate_args=False (the name torch.distributions gives the same choice) skips the check
    that every target is a class index: on a CuPy target that check reads the targets back,
    waiting for the GPU at every call. Pass it for targets checked already (gpucnn.train's,
    which data.load checked); an out-of-range target then gives a wrong loss, not an error."""

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0, validate_args=True):
        super().__init__()
        F.cross_entropy_options("CrossEntropyLoss", weight, ignore_index, reduction, label_smoothing)
        # A buffer, as in torch: .to() moves it, .float()/.double() cast it, state_dict() holds it.
        self.register_buffer("weight", weight)
        self.ignore_index = int(ignore_index)
        self.reduction, self.label_smoothing = reduction, float(label_smoothing)
        self.validate_args = bool(validate_args)
        self._saved = None

    def forward(self, logits, target):
        F.cross_entropy_args("CrossEntropyLoss", logits, target, self.weight, self.ignore_index, self.validate_args)
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
    """Mean of the squared differences, as torch.nn.MSELoss(reduction="mean"): a 0-d array on the
    input's device, of the dtype input and target promote to."""

    def __init__(self):
        super().__init__()
        self._diff = None

    def forward(self, x, target):
        F.mse_args("MSELoss", x, target)
        self._diff, self._dtype = x - target, x.dtype
        return cuda.zero_d((self._diff ** 2).mean(), x)

    def __call__(self, x, target):
        return self.forward(x, target)

    def backward(self, dy=1.0):
        diff = self.saved("_diff")
        # A float64 target promotes diff; the gradient still takes the input's dtype, as in torch.
        return (diff * (2.0 * dy / diff.size)).astype(self._dtype, copy=False)
