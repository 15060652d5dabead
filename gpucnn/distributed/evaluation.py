"""Evaluation sharded across ranks: each predicts a contiguous share of the images, and the
sums of losses and of correct predictions are added up over all ranks."""
import numpy as np

from ..evaluate import predictions
from .sampler import shard


def sharded_metrics(world, model, x, y, config, batch_size, device):
    """(mean loss, accuracy) over all of x and y, the same on every rank."""
    part = shard(np.arange(len(x)), world.rank, world.size)
    loss_sum = correct = 0.0
    if len(part):
        _, loss, accuracy = predictions(model, x[part], config, batch_size, device, labels=y[part])
        loss_sum, correct = loss * len(part), round(accuracy * len(part))
    loss_sum, correct = world.sum(loss_sum, correct)
    return loss_sum / max(len(x), 1), correct / max(len(x), 1)
