import math

from ..cuda import get_array_module
from .optimizer import Optimizer


class Adam(Optimizer):
    """torch.optim.Adam (no amsgrad), with its exact order of operations:
    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Adam: invalid beta parameters: {betas} (each must be in [0, 1))")
        if eps < 0:
            raise ValueError(f"Adam: invalid epsilon value: {eps} (must be >= 0)")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def update(self, p, grad, state):
        lr, (b1, b2), eps, wd = (self.hyper[k] for k in ("lr", "betas", "eps", "weight_decay"))
        xp = get_array_module(p.data)
        if wd:
            grad = grad + wd * p.data
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        m += (1 - b1) * (grad - m)  # torch's lerp_
        v *= b2
        v += (1 - b2) * grad * grad
        denom = xp.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        p.data -= (lr / (1 - b1 ** t)) * m / denom
