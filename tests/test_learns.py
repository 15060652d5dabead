"""A small CNN fits a small synthetic task: its training loss goes near zero.

If any backward, the optimizer or the loss were subtly wrong (a sign, a transpose, a
missing term), the loss would stall well above zero. It trains on every device of the
`device` fixture, the model's weights staying there.
"""
import numpy as np

import gpucnn
from gpucnn import nn, optim
from gpucnn.cuda import device_of, to_device


def shifted_templates(n, classes=4, size=10, seed=0):
    """Each class is a fixed random 10x10 pattern, shown shifted by up to 1 pixel, plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((classes, size + 2, size + 2))
    y = rng.integers(0, classes, size=n)
    dy, dx = rng.integers(0, 3, size=(2, n))
    x = np.stack([templates[c, i:i + size, j:j + size] for c, i, j in zip(y, dy, dx)])
    x += 0.3 * rng.standard_normal(x.shape)
    return x[:, None].astype(np.float32), y


def test_small_cnn_drives_training_loss_near_zero(device):
    gpucnn.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 10x10 -> 5x5
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 5x5 -> 2x2
        nn.Flatten(), nn.Linear(16 * 2 * 2, 4),
    ).to(device)
    criterion = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x, y = (to_device(a, device) for a in shifted_templates(64))

    losses = []
    for step in range(100):
        opt.zero_grad()
        losses.append(criterion(model(x), y))
        model.backward(criterion.backward())
        opt.step()

    assert losses[0] > 1.0  # ln 4 = 1.39 at the start: it did not start solved
    assert losses[-1] < 0.01
    assert model[0].weight.data.dtype == np.float32
    assert all(device_of(p.data) == device for p in model.parameters())
