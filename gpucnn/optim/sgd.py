from .optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD: d = g + wd*p; b = d on the first step, then b = m*b + (1 - dampening)*d;
    d = d + m*b with Nesterov, else d = b; p -= lr*d."""

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        if momentum < 0:
            raise ValueError(f"SGD: invalid momentum value: {momentum} (must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum and zero dampening, "
                             f"but got momentum={momentum}, dampening={dampening}")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=bool(nesterov))

    def update(self, p, grad, state):
        lr, momentum, wd = self.hyper["lr"], self.hyper["momentum"], self.hyper["weight_decay"]
        # .get: a state_dict saved before dampening and Nesterov existed has neither
        dampening, nesterov = self.hyper.get("dampening", 0), self.hyper.get("nesterov", False)
        d = grad + wd * p.data if wd else grad
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()
            else:
                buf *= momentum
                buf += d if dampening == 0 else (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p.data -= lr * d
