"""Residual and Identity: a ResNet basic block against PyTorch (outputs, gradients, running
statistics, state_dict keys), backward summing both branches by finite differences, and a
small ResNet trained a few SGD steps to PyTorch's weights and running statistics, on every
device."""
import numpy as np
import pytest

import gpucnn
from gpucnn import nn
from gpucnn.cuda import as_numpy, to_device
from gradcheck import check_backward


@pytest.fixture(autouse=True)
def _seeded():
    gpucnn.manual_seed(0)


def basic_block(nn_, cin, cout, stride, Residual=None):
    """conv-BN-ReLU-conv-BN plus a shortcut (1x1 conv-BN where the shape changes)."""
    body = nn_.Sequential(nn_.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn_.BatchNorm2d(cout),
                          nn_.ReLU(), nn_.Conv2d(cout, cout, 3, padding=1, bias=False), nn_.BatchNorm2d(cout))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn_.Sequential(nn_.Conv2d(cin, cout, 1, stride=stride, bias=False), nn_.BatchNorm2d(cout))
    return Residual(body, shortcut)


def torch_residual(torch):
    """nn.Residual written for torch, with the same children's names."""
    class TorchResidual(torch.nn.Module):
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))
    return TorchResidual


@pytest.mark.parametrize("cin, cout, stride", [(3, 3, 1), (2, 4, 2)], ids=["identity-shortcut", "projection"])
def test_basic_block_matches_torch(device, cin, cout, stride):
    torch = pytest.importorskip("torch")

    ours = basic_block(nn, cin, cout, stride, nn.Residual).double()
    theirs = basic_block(torch.nn, cin, cout, stride, torch_residual(torch)).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    ours.to(device)
    rng = np.random.default_rng(0)
    for step in range(2):
        x = rng.standard_normal((2, cin, 6, 5))
        xt = torch.tensor(x, requires_grad=True)
        y, yt = ours(to_device(x, device)), theirs(xt)
        np.testing.assert_allclose(as_numpy(y), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        dy = rng.standard_normal(y.shape)
        ours.zero_grad()
        theirs.zero_grad()
        dx = ours.backward(to_device(dy, device))
        yt.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(as_numpy(dx), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        grads = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(as_numpy(p.grad), grads[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=name)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("projection", [False, True], ids=["identity-shortcut", "projection"])
def test_backward_sums_both_branches(device, projection):
    """Smooth branches (no ReLU kink): the analytic gradient against central differences."""
    body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1))
    shortcut = nn.Conv2d(2, 2, 1) if projection else None
    m = nn.Residual(body, shortcut).double()
    check_backward(m.to(device), to_device(np.random.default_rng(1).standard_normal((2, 2, 4, 3)), device))


def test_identity_shortcut_adds_the_input():
    x = np.random.default_rng(0).standard_normal((2, 3))
    m = nn.Residual(nn.Identity())
    np.testing.assert_array_equal(m(x), 2 * x)
    np.testing.assert_array_equal(m.backward(x), 2 * x)
    assert list(m.state_dict()) == [] and nn.Identity()(x) is x and nn.Identity(54, unused=0.1)(x) is x


def test_state_dict_names_body_then_shortcut():
    m = nn.Residual(nn.Linear(2, 2), nn.Linear(2, 2, bias=False))
    assert list(m.state_dict()) == ["body.weight", "body.bias", "shortcut.weight"]


def test_mismatched_branches_are_a_clear_error():
    m = nn.Residual(nn.Conv2d(2, 3, 1))
    with pytest.raises(ValueError, match=r"Residual: the body's output\[1, 3, 4, 4\] and the shortcut's \[1, 2, 4, 4\]"):
        m(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="Residual: body must be a Module, but got function"):
        nn.Residual(lambda x: x)
    with pytest.raises(ValueError, match="Residual: shortcut must be a Module or None, but got int"):
        nn.Residual(nn.Identity(), 3)


def small_resnet(nn_, Residual):
    """conv-BN-ReLU stem, an identity block, a projection block with stride 2, global average
    pooling, linear: a ResNet's pieces, tiny."""
    return nn_.Sequential(
        nn_.Conv2d(1, 4, 3, padding=1, bias=False), nn_.BatchNorm2d(4), nn_.ReLU(),
        basic_block(nn_, 4, 4, 1, Residual), nn_.ReLU(),
        basic_block(nn_, 4, 6, 2, Residual), nn_.ReLU(),
        nn_.AdaptiveAvgPool2d(1), nn_.Flatten(), nn_.Linear(6, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_resnet_trains_to_torchs_weights_and_running_statistics(device, dtype):
    torch = pytest.importorskip("torch")
    from gpucnn import optim

    ours = small_resnet(nn, nn.Residual)
    theirs = small_resnet(torch.nn, torch_residual(torch))
    if dtype == np.float64:
        ours.double()
        theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    ours.to(device)
    opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for _ in range(4):
        x, y = rng.standard_normal((6, 1, 7, 7)).astype(dtype), rng.integers(0, 3, size=6)
        opt.zero_grad()
        crit(ours(to_device(x, device)), to_device(y, device))
        ours.backward(crit.backward())
        opt.step()
        opt_t.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt_t.step()
    tolerance = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(state[name], value.numpy(), err_msg=name, **tolerance)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 1, 7, 7)).astype(dtype)
    np.testing.assert_allclose(as_numpy(ours(to_device(x, device))), theirs(torch.from_numpy(x)).detach().numpy(),
                               **tolerance)
