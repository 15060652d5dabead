"""The CIFAR-style ResNet of `--arch resnet`: its shape (ResNet-20's), a few training steps
of a small one with BatchNorm, residual blocks, global pooling, dropout, label smoothing and
Nesterov SGD ending with PyTorch's weights and running statistics, and a trained
checkpoint that PyTorch loads with strict=True and runs to the same logits."""
from pathlib import Path

import numpy as np
import pytest

import gpucnn
from gpucnn import arch, checkpoint, data, evaluate, nn, optim, train
from gpucnn.backends import ops_for
from gpucnn.cuda import as_numpy, to_device

torch = pytest.importorskip("torch")


class TorchResidual(torch.nn.Module):
    """nn.Residual's twin: body(x) + shortcut(x), children named as ours."""

    def __init__(self, body, shortcut):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class RecordedDropout(torch.nn.Module):
    """Multiplies by the mask our Dropout drew for the same step (set in .mask before forward)."""

    mask = None

    def forward(self, x):
        return x * self.mask if self.training else x


def torch_twin(m):
    """The torch.nn module of the same structure and state_dict keys as ours."""
    t = torch.nn
    if isinstance(m, nn.Sequential):
        return t.Sequential(*[torch_twin(c) for c in m])
    if isinstance(m, nn.Residual):
        return TorchResidual(torch_twin(m.body), None if m.shortcut is None else torch_twin(m.shortcut))
    if isinstance(m, nn.Conv2d):
        return t.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return t.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum)
    if isinstance(m, nn.Linear):
        return t.Linear(m.in_features, m.out_features)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return t.AdaptiveAvgPool2d(1)
    if isinstance(m, nn.Dropout):
        return RecordedDropout()
    return {nn.ReLU: t.ReLU, nn.Flatten: t.Flatten, nn.MaxPool2d: lambda: t.MaxPool2d(2)}[type(m)]()


def to_torch(state):
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def test_resnet_preset_is_resnet20():
    """19 convolutions and a linear layer; 0.27M parameters, as in He et al.'s table 6."""
    model = arch.build_model("resnet", (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19 and sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert sum(p.data.size for p in model.parameters()) == 272474
    assert arch.resolve("resnet") == arch.resnet_spec(20, 16)
    for shape in [(3, 32, 32), (1, 8, 8), (1, 28, 28)]:
        assert arch.build_model("resnet", shape, 10)(np.zeros((2,) + shape, np.float32)).shape == (2, 10)
    twin = torch_twin(model)
    twin.load_state_dict(to_torch(model.state_dict()), strict=True)
    assert list(twin.state_dict()) == list(model.state_dict())


TOLERANCES = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_training_steps_match_torch(device, dtype):
    """Four steps of a small ResNet: the losses, then every weight and running statistic."""
    gpucnn.manual_seed(3)
    ours = arch.build_model("conv4k3p1bn res4 res6s2 gap drop0.25", (1, 8, 8), 5)
    ours = ours.double() if dtype == np.float64 else ours.float()
    theirs = torch_twin(ours).to(torch.float64 if dtype == np.float64 else torch.float32)
    theirs.load_state_dict(to_torch(ours.state_dict()), strict=True)
    ours.to(device)
    dropout, twin_dropout = ours[-3], theirs[-3]  # gap, drop, then Flatten and the classifier
    assert isinstance(dropout, nn.Dropout)
    opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    rng = np.random.default_rng(4)
    for step in range(4):
        x, y = rng.standard_normal((6, 1, 8, 8)).astype(dtype), rng.integers(0, 5, size=6)
        opt.zero_grad()
        loss = crit(ours(to_device(x, device)), to_device(y, device))
        ours.backward(crit.backward())
        opt.step()
        twin_dropout.mask = torch.from_numpy(ops_for(np.ones(1)).dropout_apply(np.ones((6, 6, 1, 1), dtype), *dropout._mask))
        assert 0 < (twin_dropout.mask == 0).sum() < 36  # the mask drops some features, and not all
        opt_t.zero_grad()
        loss_t = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y), label_smoothing=0.1)
        loss_t.backward()
        opt_t.step()
        np.testing.assert_allclose(as_numpy(loss), loss_t.item(), **TOLERANCES[dtype], err_msg=f"loss of step {step}")
    want = theirs.state_dict()
    got = ours.state_dict()
    assert list(got) == list(want)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v.numpy(), **TOLERANCES[dtype], err_msg=k)
    assert int(got["1.num_batches_tracked"]) == 4


def test_a_trained_checkpoint_loads_into_torch_strictly(tmp_path):
    """`--arch resnet` for an epoch on a few digits; torch's twin loads its safetensors with
    strict=True and computes the same logits in eval mode (running statistics included)."""
    from safetensors.torch import load_file

    assert train.main(["--out", str(tmp_path), "--arch", "resnet", "--epochs", "1", "--limit-train", "64",
                       "--limit-test", "16", "--no-plots", "--device", "cpu"]) == 0
    model, config = evaluate.load_trained(str(tmp_path), "cpu")
    twin = torch_twin(model)
    twin.load_state_dict(load_file(str(Path(checkpoint.latest(str(tmp_path))) / checkpoint.MODEL_FILE)), strict=True)
    assert twin[1].num_batches_tracked.item() == 2  # 64 images in batches of 32
    twin.eval()
    x = data.normalize(data.load("digits").x_test[:16], config["max_value"], config["mean"], config["std"])
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(as_numpy(model(x)), expected, rtol=1e-4, atol=1e-4)


def test_the_bench_builds_the_same_resnet20_in_both_frameworks():
    from gpucnn.bench import cases

    ours = cases.resnet20(nn)
    theirs = cases.resnet20(torch.nn)
    theirs.load_state_dict(to_torch(ours.state_dict()), strict=True)
    assert sum(p.numel() for p in theirs.parameters()) == 272474
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
