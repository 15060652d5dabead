"""Dropout: Philox4x32-10 against Random123's known answers; the same mask on every device
for the same gpucnn.manual_seed; inverted scaling, eval identity, p = 0 and p = 1; backward
redrawing the forward's mask (the adjoint identity); the keep rate; bad p refused."""
import numpy as np
import pytest

import gpucnn
from gpucnn import functional as F, nn
from gpucnn.backends.cpu.dropout import philox4x32_10
from gpucnn.cuda import as_numpy, device_of, to_device

# Random123's kat_vectors for philox4x32_10: (counter, key) -> output
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox_matches_random123_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32_10(counter, key)) == expected


def test_philox_is_vectorized_over_counters():
    words = philox4x32_10((np.array([0, 0xFFFFFFFF]), np.array([0, 0xFFFFFFFF]), np.array([0, 0xFFFFFFFF]),
                           np.array([0, 0xFFFFFFFF])), (0, 0))
    assert [int(w[0]) for w in words] == list(KNOWN_ANSWERS[0][2])


def draw(device, p, shape, dtype, seed=7):
    gpucnn.manual_seed(seed)
    m = nn.Dropout(p)
    x = np.random.default_rng(0).uniform(1, 2, shape).astype(dtype)
    return m, x, m(to_device(x, device))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), (2, 3, 4, 4)])  # 105 elements: a partial group of four
def test_every_device_draws_the_same_mask(device, shape, dtype):
    _, x, y = draw(device, 0.3, shape, dtype)
    _, _, want = draw("cpu", 0.3, shape, dtype)
    assert device_of(y) == device and y.dtype == dtype
    np.testing.assert_array_equal(as_numpy(y), want)


def test_grid_stride_loop_covers_groups_beyond_the_grid(cuda_device, monkeypatch):
    from gpucnn.backends.cuda import launch
    monkeypatch.setattr(launch, "MAX_GRID", 1)
    _, _, y = draw(cuda_device, 0.3, (3, 1001), np.float32)
    np.testing.assert_array_equal(as_numpy(y), draw("cpu", 0.3, (3, 1001), np.float32)[2])


def test_kept_elements_are_scaled_and_the_mask_matches_its_definition(device):
    m, x, y = draw(device, 0.25, (4, 50), np.float64)
    y = as_numpy(y)
    # element i is kept when the top 24 bits of word i % 4 of the block (i/4, call 0) reach ceil(p 2^24)
    groups = np.arange(50, dtype=np.uint64)
    words = np.stack(philox4x32_10((groups, 0, 0, 0), (7, 0)), axis=1).reshape(-1)
    keep = (words >> 8) >= 2**22
    np.testing.assert_array_equal(y, np.where(keep.reshape(4, 50), x * (1 / 0.75), 0))


def test_keep_rate_and_mean_are_those_of_inverted_dropout(device):
    _, x, y = draw(device, 0.4, (100, 1000), np.float32)
    y = as_numpy(y)
    kept = np.mean(y != 0)
    assert abs(kept - 0.6) < 4 * np.sqrt(0.24 / y.size)  # four standard deviations
    assert abs(y.sum() / x.sum() - 1) < 0.01


def test_backward_redraws_the_forward_mask(device):
    """<D(x), dy> = <x, D'(dy)> for the mask of that very call, even after other calls."""
    m, x, y = draw(device, 0.5, (6, 9), np.float64)
    other = nn.Dropout(0.5)
    other(to_device(x, device))  # a later call draws another mask
    dy = np.random.default_rng(1).standard_normal(x.shape)
    dx = as_numpy(m.backward(to_device(dy, device)))
    np.testing.assert_allclose(np.sum(as_numpy(y) * dy), np.sum(x * dx), rtol=1e-12)
    np.testing.assert_array_equal(dx == 0, as_numpy(y) == 0)


def test_calls_draw_new_masks_and_manual_seed_replays_them():
    x = np.ones(64)
    gpucnn.manual_seed(3)
    first, second = F.dropout(x), F.dropout(x)
    assert not np.array_equal(first, second)
    gpucnn.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x), first)
    gpucnn.manual_seed(4)
    assert not np.array_equal(F.dropout(x), first)


def test_eval_mode_p0_and_p1(device):
    x = to_device(np.random.default_rng(0).standard_normal((3, 4)), device)
    m = nn.Dropout(0.5).eval()
    assert m(x) is x and m.backward(x) is x
    assert F.dropout(x, 0.5, training=False) is x
    np.testing.assert_array_equal(as_numpy(nn.Dropout(0.0)(x)), as_numpy(x))
    np.testing.assert_array_equal(as_numpy(nn.Dropout(1.0)(x)), np.zeros((3, 4)))


def test_nan_stays_nan_as_in_torch():
    y = nn.Dropout(0.5)(np.full(16, np.nan))
    assert np.isnan(y).all()


def test_matches_torch_in_distribution():
    """torch draws another mask; what must agree is the rule: zeros or x / (1 - p)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(1, 2, 1000).astype(np.float32)
    for y in (nn.Dropout(0.2)(x), torch.nn.Dropout(0.2)(torch.from_numpy(x)).numpy()):
        np.testing.assert_allclose(y[y != 0], x[y != 0] / np.float32(0.8), rtol=1e-6)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_bad_p_is_a_clear_error(p):
    with pytest.raises(ValueError, match=f"Dropout: dropout probability has to be between 0 and 1, but got p={p!r}"):
        nn.Dropout(p)
    with pytest.raises(ValueError, match="dropout: dropout probability has to be between 0 and 1"):
        F.dropout(np.ones(3), p)


def test_backward_before_forward_and_bad_dy_are_clear_errors():
    m = nn.Dropout()
    with pytest.raises(RuntimeError, match="Dropout: backward called before forward"):
        m.backward(np.ones(3))
    m(np.ones(3))
    with pytest.raises(ValueError, match=r"Dropout.backward: expected dy of the output's shape \[3\]"):
        m.backward(np.ones(4))
