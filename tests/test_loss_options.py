"""CrossEntropyLoss's options (weight, ignore_index, reduction, label_smoothing), alone and
together: values and gradients against PyTorch where it is installed, gradients by finite
differences always, on every device; bad options are clear errors."""
import numpy as np
import pytest

from gpucnn import functional as F, nn
from gpucnn.cuda import as_numpy, device_of, to_device
from gradcheck import check_backward

TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}
# Row 1 and row 4 are ignored under ignore_index=2; none is with the default -100.
TARGET = np.array([0, 2, 4, 1, 2, 3])
WEIGHT = np.array([0.5, 2.0, 1.0, 0.25, 3.0])
OPTIONS = {
    "plain": {},
    "weight": dict(weight=WEIGHT),
    "ignore": dict(ignore_index=2),
    "smoothing": dict(label_smoothing=0.1),
    "all-three": dict(weight=WEIGHT, ignore_index=2, label_smoothing=0.2),
    "full-smoothing": dict(weight=WEIGHT, label_smoothing=1.0),
}


def logits_of(dtype, seed=3):
    return (3 * np.random.default_rng(seed).standard_normal((len(TARGET), 5))).astype(dtype)


def on(options, device, dtype):
    """The options with the weight cast and moved as a caller would pass it."""
    if options.get("weight") is None:
        return dict(options)
    return {**options, "weight": to_device(options["weight"].astype(dtype), device)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_matches_torch(device, options, reduction, dtype):
    torch = pytest.importorskip("torch")
    logits = logits_of(dtype)
    crit = nn.CrossEntropyLoss(**options, reduction=reduction).to(device)
    loss = crit(to_device(logits, device), to_device(TARGET, device))

    torch_options = {k: torch.from_numpy(v.astype(dtype)) if k == "weight" else v for k, v in options.items()}
    lt = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(lt, torch.from_numpy(TARGET), reduction=reduction, **torch_options)
    if reduction == "none":
        dy = np.random.default_rng(1).standard_normal(len(TARGET)).astype(dtype)
        loss_t.backward(torch.from_numpy(dy))
        assert device_of(loss) == device and loss.dtype == dtype
        np.testing.assert_allclose(as_numpy(loss), loss_t.detach().numpy(), **TOLERANCES[dtype])
        grad = crit.backward(to_device(dy, device))
    else:
        (loss_t * 0.7).backward()
        # A 0-d array of the logits' own type (ndarray, the emulator's device array or CuPy's),
        # as torch's 0-d tensor: float() and .item() give its number.
        assert type(loss) is type(crit._saved["probs"]) and loss.shape == () and loss.dtype == dtype
        assert device_of(loss) == device and isinstance(loss.item(), float)
        np.testing.assert_allclose(float(loss), loss_t.item(), **TOLERANCES[dtype])
        grad = crit.backward(0.7)
    assert device_of(grad) == device and grad.dtype == dtype
    np.testing.assert_allclose(as_numpy(grad), lt.grad.numpy(), **TOLERANCES[dtype])
    want = loss_t.detach().numpy() if reduction == "none" else loss_t.item()
    got = F.cross_entropy(to_device(logits, device), to_device(TARGET, device), reduction=reduction,
                          **on(options, device, dtype))
    np.testing.assert_allclose(as_numpy(got), want, **TOLERANCES[dtype])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_gradient_by_finite_differences(device, options, reduction):
    crit = nn.CrossEntropyLoss(**options, reduction=reduction).to(device)
    check_backward(crit, to_device(logits_of(np.float64), device), to_device(TARGET, device))


def test_all_options_together_match_the_formula_written_out():
    """The reference written out: -log softmax at the target, weighted, smoothed, averaged by hand."""
    logits = logits_of(np.float64)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    keep = TARGET != 2
    rows = np.arange(len(TARGET))[keep]
    w_y = WEIGHT[TARGET[keep]]
    nll = -(w_y * logp[rows, TARGET[keep]]).sum() / w_y.sum()
    smooth = -(logp[rows] * WEIGHT).sum() / w_y.sum()
    want = 0.8 * nll + 0.2 / 5 * smooth
    got = nn.CrossEntropyLoss(WEIGHT, ignore_index=2, label_smoothing=0.2)(logits, TARGET)
    assert got == pytest.approx(want, rel=1e-13)


def test_ignored_rows_get_no_gradient_and_may_hold_any_index(device):
    target = np.array([1, -100, 0, 7])  # 7 is out of range for 3 classes, but ignored
    crit = nn.CrossEntropyLoss(ignore_index=7, label_smoothing=0.3)
    crit(to_device(np.ones((4, 3)), device), to_device(np.where(target == -100, 7, target), device))
    grad = as_numpy(crit.backward())
    np.testing.assert_array_equal(grad[[1, 3]], 0)
    assert (grad[[0, 2]] != 0).all()


def test_every_row_ignored_gives_nan_for_mean_as_in_torch(device):
    crit = nn.CrossEntropyLoss()
    loss = crit(to_device(np.zeros((2, 3)), device), to_device(np.array([-100, -100]), device))
    assert np.isnan(loss)
    assert nn.CrossEntropyLoss(reduction="sum")(np.zeros((2, 3)), np.array([-100, -100])) == 0.0


def test_the_weight_is_a_buffer_moved_with_the_loss(cuda_device):
    crit = nn.CrossEntropyLoss(WEIGHT).to(cuda_device)
    assert device_of(crit.weight) == "cuda"
    assert list(crit.state_dict()) == ["weight"] and crit.parameters() == []
    assert nn.CrossEntropyLoss(WEIGHT).float().weight.dtype == np.float32
    crit(to_device(logits_of(np.float64), cuda_device), to_device(TARGET, cuda_device))
    with pytest.raises(ValueError, match="CrossEntropyLoss: expected all arrays on one device, but got input on cpu, "
                                         "target on cpu, weight on cuda"):
        crit(logits_of(np.float64), TARGET)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.CrossEntropyLoss(label_smoothing=1.5), r"CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, but got label_smoothing=1.5"),
    (lambda: nn.CrossEntropyLoss(label_smoothing=-0.1), r"CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, but got label_smoothing=-0.1"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), r"CrossEntropyLoss: reduction must be 'none', 'mean' or 'sum', but got reduction='avg'"),
    (lambda: nn.CrossEntropyLoss(ignore_index=1.5), r"CrossEntropyLoss: ignore_index must be an int, but got ignore_index=1.5"),
    (lambda: nn.CrossEntropyLoss(np.ones((2, 5))), r"CrossEntropyLoss: expected a 1D weight \(one per class\), but got weight of shape \[2, 5\]"),
    (lambda: nn.CrossEntropyLoss([1.0, 2.0]), r"CrossEntropyLoss: expected weight to be a numpy or cupy array, but got list"),
    (lambda: nn.CrossEntropyLoss(WEIGHT[:3])(logits_of(np.float64), TARGET),
     r"CrossEntropyLoss: weight should be defined either for all 5 classes or no classes, but got weight of shape \[3\]"),
    (lambda: F.cross_entropy(logits_of(np.float64), TARGET, WEIGHT, reduction="batchmean"), r"cross_entropy: reduction must be"),
])
def test_bad_options_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_reduction_none_backward_wants_one_dy_per_row(device):
    crit = nn.CrossEntropyLoss(reduction="none")
    crit(to_device(logits_of(np.float32), device), to_device(TARGET, device))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.backward: expected dy of the output's shape \[6\] and dtype float32"):
        crit.backward(to_device(np.ones((6, 1), np.float32), device))
