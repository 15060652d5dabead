from .optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD (dampening 0, no Nesterov): d = g + wd*p; b = m*b + d; p -= lr*b."""

    def __init__(self, params, lr, momentum=0, weight_decay=0):
        if momentum < 0:
            raise ValueError(f"SGD: invalid momentum value: {momentum} (must be >= 0)")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def update(self, p, grad, state):
        lr, momentum, wd = self.hyper["lr"], self.hyper["momentum"], self.hyper["weight_decay"]
        d = grad + wd * p.data if wd else grad
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()
            else:
                buf *= momentum
                buf += d
            d = buf
        p.data -= lr * d
