import math

from ..cuda import get_array_module
from .optimizer import Optimizer


class Adam(Optimizer):
    """torch.optim.Adam, with its exact order of operations:
    g += wd*p (L2 penalty);  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
    v_max = max(v_max, v) with amsgrad, read in place of v below;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)."""

    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        name = type(self).__name__
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{name}: invalid beta parameters: {betas} (each must be in [0, 1))")
        if eps < 0:
            raise ValueError(f"{name}: invalid epsilon value: {eps} (must be >= 0)")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad))

    def update(self, p, grad, state):
        lr, (b1, b2), eps, wd = (self.hyper[k] for k in ("lr", "betas", "eps", "weight_decay"))
        amsgrad = self.hyper.get("amsgrad", False)  # absent from a state_dict saved before amsgrad existed
        xp = get_array_module(p.data)
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
            if amsgrad:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        if wd and self.decoupled_weight_decay:
            p.data *= 1 - lr * wd
        elif wd:
            grad = grad + wd * p.data
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        m += (1 - b1) * (grad - m)  # torch's lerp_
        v *= b2
        v += (1 - b2) * grad * grad
        if amsgrad:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = xp.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        p.data -= (lr / (1 - b1 ** t)) * (m / denom)  # torch's addcdiv_: the quotient, then the step size


class AdamW(Adam):
    """torch.optim.AdamW: Adam whose weight decay shrinks the weights directly,
    p *= 1 - lr*wd before the update, instead of adding wd*p to the gradient
    (Loshchilov & Hutter, "Decoupled weight decay regularization"). torch's defaults."""

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
