"""Dropout, as torch.nn.Dropout: in training, each element is zeroed with probability p and
the rest scaled by 1/(1-p) (inverted dropout, so eval mode is the identity). The mask comes
from gpucnn's Philox stream (`gpucnn.rng`): the same on every device for the same
`gpucnn.manual_seed`, and redrawn by backward from the forward's (seed, call)."""
from .. import checks, functional as F, rng
from ..backends import ops_for
from .module import Module


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = F.dropout_probability("Dropout", p)
        self._mask = None

    def forward(self, x):
        checks.float_array("Dropout", "input", x)
        self._y_shape, self._y_dtype = x.shape, x.dtype
        if not self.training:
            self._mask = ()  # backward passes dy through
            return x
        self._mask = rng.next_call() + F.dropout_constants(self.p)
        return ops_for(x).dropout_apply(x, *self._mask)

    def backward(self, dy):
        mask = self.saved("_mask")
        checks.gradient("Dropout", dy, self._y_shape, self._y_dtype)
        return ops_for(dy).dropout_apply(dy, *mask) if mask else dy

    def extra_repr(self):
        return f"p={self.p}"
