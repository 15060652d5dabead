"""BatchNorm1d/2d: forward, backward, running statistics and buffers against PyTorch, on every
device of the `device` fixture in float32 and float64; backward by finite differences; the
kernels' fixed-order reductions (bit-identical reruns, accuracy on a large, offset channel);
buffers in state_dict, .to(), .double(), load_state_dict and checkpoints."""
import numpy as np
import pytest

import gpucnn
from gpucnn import checkpoint, nn, optim
from gpucnn.backends import cpu
from gpucnn.cuda import as_numpy, device_of, to_device
from gradcheck import check_backward

TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}

# layer, input shape: BatchNorm1d over (N, C) and (N, C, L), BatchNorm2d over (N, C, H, W)
CASES = {
    "1d-NC": (nn.BatchNorm1d, (6, 3)),
    "1d-NCL": (nn.BatchNorm1d, (3, 4, 5)),
    "2d": (nn.BatchNorm2d, (2, 3, 4, 5)),
}
OPTIONS = {  # momentum, affine, track_running_stats
    "default": (0.1, True, True),
    "cumulative": (None, True, True),
    "no-affine": (0.3, False, True),
    "no-running-stats": (0.1, True, False),
}


@pytest.fixture(autouse=True)
def _seeded():
    gpucnn.manual_seed(0)


def inputs(shape, seed, dtype=np.float64):
    """Values with a channel-dependent offset and scale, so that normalizing does something."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    scale = np.linspace(0.5, 3, C).reshape((1, C) + (1,) * (len(shape) - 2))
    offset = np.linspace(-2, 5, C).reshape(scale.shape)
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def assert_close(ours, theirs, dtype, what, device):
    assert device_of(ours) == device, f"{what}: on {device_of(ours)}, expected {device}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype}, expected {theirs.dtype}"
    np.testing.assert_allclose(as_numpy(ours), theirs, err_msg=what, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("layer, shape", CASES.values(), ids=CASES.keys())
def test_matches_torch_over_training_steps_and_eval(device, layer, shape, options, dtype):
    torch = pytest.importorskip("torch")
    momentum, affine, track = options
    C = shape[1]
    ours = layer(C, momentum=momentum, affine=affine, track_running_stats=track)
    theirs = getattr(torch.nn, layer.__name__)(C, momentum=momentum, affine=affine, track_running_stats=track)
    if dtype == np.float64:
        ours.double()
        theirs.double()
    if affine:  # weights other than the initial ones and zeros
        rng = np.random.default_rng(9)
        for p, q in ((ours.weight, theirs.weight), (ours.bias, theirs.bias)):
            p.data = rng.uniform(0.5, 1.5, C).astype(dtype)
            q.data = torch.from_numpy(p.data.copy())
    ours.to(device)
    for step, training in enumerate([True, True, True, False]):
        ours.train(training)
        theirs.train(training)
        ours.zero_grad()
        theirs.zero_grad()
        x = inputs(shape, step, dtype)
        xt = torch.tensor(x, requires_grad=True)
        y, yt = ours(to_device(x, device)), theirs(xt)
        assert_close(y, yt.detach().numpy(), dtype, f"step {step}: output", device)
        dy = np.random.default_rng(10 + step).standard_normal(shape).astype(dtype)
        dx = ours.backward(to_device(dy, device))
        yt.backward(torch.from_numpy(dy))
        assert_close(dx, xt.grad.numpy(), dtype, f"step {step}: input gradient", device)
        if affine:
            assert_close(ours.weight.grad, theirs.weight.grad.numpy(), dtype, f"step {step}: weight gradient", device)
            assert_close(ours.bias.grad, theirs.bias.grad.numpy(), dtype, f"step {step}: bias gradient", device)
        state, torch_state = ours.state_dict(), theirs.state_dict()
        assert list(state) == list(torch_state)
        for name, value in torch_state.items():
            value = value.numpy()
            assert state[name].dtype == value.dtype, name
            np.testing.assert_allclose(state[name], value, err_msg=f"step {step}: {name}", **TOLERANCES[dtype])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("layer, shape", CASES.values(), ids=CASES.keys())
def test_backward_matches_finite_differences(device, layer, shape, options, training):
    momentum, affine, track = options
    m = layer(shape[1], momentum=momentum, affine=affine, track_running_stats=track).double()
    if affine:
        m.weight.data = np.linspace(0.5, 2, shape[1])
        m.bias.data = np.linspace(-1, 1, shape[1])
    if track:  # running statistics unlike the batch's, for eval mode
        m.running_mean[...] = np.linspace(-1, 1, shape[1])
        m.running_var[...] = np.linspace(0.5, 2, shape[1])
    m.train(training)
    check_backward(m.to(device), to_device(inputs(shape, 1), device))


def test_running_statistics_follow_torchs_rules():
    """Biased variance to normalize, unbiased in running_var; momentum=None averages all batches."""
    x1, x2 = inputs((4, 2, 3), 1), inputs((4, 2, 3), 2)
    m = nn.BatchNorm1d(2, momentum=None).double()
    y = m(x1)
    M = 12
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose((y ** 2).mean(axis=(0, 2)), x1.var(axis=(0, 2)) / (x1.var(axis=(0, 2)) + 1e-5))
    m(x2)
    np.testing.assert_allclose(m.running_mean, (x1.mean(axis=(0, 2)) + x2.mean(axis=(0, 2))) / 2)
    unbiased = [x.var(axis=(0, 2)) * M / (M - 1) for x in (x1, x2)]
    np.testing.assert_allclose(m.running_var, (unbiased[0] + unbiased[1]) / 2)
    assert m.num_batches_tracked == 2 and m.num_batches_tracked.dtype == np.int64
    m.eval()
    frozen = m.state_dict()
    np.testing.assert_allclose(m(x1), (x1 - m.running_mean[:, None]) / np.sqrt(m.running_var[:, None] + 1e-5))
    for name, value in m.state_dict().items():  # eval mode leaves the buffers alone
        np.testing.assert_array_equal(value, frozen[name])


def test_without_running_statistics_eval_uses_the_batch():
    m = nn.BatchNorm2d(3, track_running_stats=False).double()
    x = inputs((2, 3, 4, 4), 0)
    train_y = m(x)
    m.eval()
    np.testing.assert_array_equal(m(x), train_y)
    assert list(m.state_dict()) == ["weight", "bias"] and m.buffers() == []


def test_buffers_are_state_but_not_parameters(device):
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2),
                         nn.Sequential(nn.Flatten(), nn.Linear(2, 2), nn.BatchNorm1d(2)))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                                 torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]

    ours.to(device)
    for name, b in ours.named_buffers():
        assert device_of(b) == device, name
    ours.double()
    assert ours[1].running_mean.dtype == np.float64 and ours[1].num_batches_tracked.dtype == np.int64

    # torch's trained state loads into ours (buffers included), keeping our device and dtypes
    theirs.train()
    theirs(torch.randn(4, 1, 3, 3))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy().astype(ours.state_dict()[name].dtype))
    assert device_of(ours[1].running_var) == device and int(ours[1].num_batches_tracked) == 1
    with pytest.raises(ValueError, match="missing keys: \\['1.num_batches_tracked'\\]"):
        ours.load_state_dict({k: v for k, v in ours.state_dict().items() if k != "1.num_batches_tracked"})


def test_checkpoint_keeps_buffers_and_torch_loads_it_strictly(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))
    x = inputs((4, 1, 5, 5), 0, np.float32)
    for _ in range(2):
        model(x)
    path = checkpoint.save(str(tmp_path), model, optim.SGD(model.parameters(), lr=0.1), 1,
                           np.random.default_rng(0), {"arch": "test"})
    weights, _ = checkpoint.load_model(path)
    restored = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))
    restored.load_state_dict(weights)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], value)
        assert restored.state_dict()[name].dtype == value.dtype
    assert int(restored[1].num_batches_tracked) == 2

    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(18, 3))
    theirs.load_state_dict(safetensors_torch.load_file(f"{path}/{checkpoint.MODEL_FILE}"), strict=True)
    theirs.eval()
    model.eval()
    np.testing.assert_allclose(theirs(torch.from_numpy(x)).detach().numpy(), model(x), rtol=1e-5, atol=1e-6)


def test_statistics_are_accurate_for_a_large_offset_channel(device):
    """float32, 2^18 values per channel around 1000 with spread 0.01: a single running sum of
    squares would cancel to nothing; the backends keep the variance to float32 precision."""
    rng = np.random.default_rng(0)
    x = (1000 + 0.01 * rng.standard_normal((16, 2, 128, 128))).astype(np.float32)
    x3 = x.reshape(16, 2, -1)
    mean, var = (as_numpy(a) for a in ops(device).batch_norm_statistics(to_device(x3, device)))
    x64 = x3.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2)), rtol=1e-7)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2)), rtol=1e-4)
    dy = rng.standard_normal(x3.shape).astype(np.float32)
    invstd = 1 / np.sqrt(x64.var(axis=(0, 2)) + 1e-5)
    dweight, dbias = (as_numpy(a) for a in ops(device).batch_norm_backward_reduce(
        to_device(dy, device), to_device(x3, device), to_device(mean, device), to_device(invstd.astype(np.float32), device)))
    xhat = (x64 - mean[:, None]) * invstd[:, None]
    np.testing.assert_allclose(dbias, dy.sum(axis=(0, 2), dtype=np.float64), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(dweight, (dy * xhat).sum(axis=(0, 2)), rtol=1e-4, atol=1e-2)


def ops(device):
    from gpucnn.backends import ops_for
    return ops_for(to_device(np.zeros(1, np.float32), device))


def test_kernels_give_bit_identical_results_across_runs(cuda_device):
    x = inputs((4, 3, 30, 30), 0, np.float32)
    dy = inputs((4, 3, 30, 30), 1, np.float32)
    runs = []
    for _ in range(2):
        m = nn.BatchNorm2d(3).to(cuda_device)
        y = m(to_device(x, cuda_device))
        dx = m.backward(to_device(dy, cuda_device))
        runs.append([as_numpy(a).tobytes() for a in (y, dx, m.weight.grad, m.bias.grad, m.running_mean, m.running_var)])
    assert runs[0] == runs[1]


def test_grid_stride_loops_cover_channels_and_elements_beyond_the_grid(cuda_device, monkeypatch):
    from gpucnn.backends.cuda import launch
    monkeypatch.setattr(launch, "MAX_GRID", 1)  # one block does every channel, and every element
    test_kernels_match_numpy(cuda_device, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_numpy(cuda_device, dtype):
    x, dy = inputs((3, 5, 7, 9), 0, dtype).reshape(3, 5, 63), inputs((3, 5, 7, 9), 1, dtype).reshape(3, 5, 63)
    weight, bias = np.linspace(0.5, 2, 5).astype(dtype), np.linspace(-1, 1, 5).astype(dtype)
    cuda_ops = ops(cuda_device)
    d = lambda a: to_device(a, cuda_device)  # noqa: E731
    tol = TOLERANCES[dtype]
    want = cpu.batch_norm_statistics(x)
    got = cuda_ops.batch_norm_statistics(d(x))
    for g, w in zip(got, want):
        np.testing.assert_allclose(as_numpy(g), w, **tol)
    mean, var = want
    invstd = cpu.batch_norm_invstd(var, 1e-5)
    np.testing.assert_allclose(as_numpy(cuda_ops.batch_norm_invstd(d(var), 1e-5)), invstd, **tol)
    np.testing.assert_allclose(as_numpy(cuda_ops.batch_norm_forward(d(x), d(mean), d(invstd), d(weight), d(bias))),
                               cpu.batch_norm_forward(x, mean, invstd, weight, bias), **tol)
    dweight, dbias = cpu.batch_norm_backward_reduce(dy, x, mean, invstd)
    for g, w in zip(cuda_ops.batch_norm_backward_reduce(d(dy), d(x), d(mean), d(invstd)), (dweight, dbias)):
        np.testing.assert_allclose(as_numpy(g), w, **tol)
    for batch_stats in (True, False):
        np.testing.assert_allclose(
            as_numpy(cuda_ops.batch_norm_backward_data(d(dy), d(x), d(mean), d(invstd), d(weight), d(dweight),
                                                       d(dbias), batch_stats)),
            cpu.batch_norm_backward_data(dy, x, mean, invstd, weight, dweight, dbias, batch_stats), **tol)
    rm, rv = np.linspace(0, 1, 5).astype(dtype), np.linspace(1, 2, 5).astype(dtype)
    rm_d, rv_d = d(rm), d(rv)
    cuda_ops.batch_norm_update_running(rm_d, rv_d, d(mean), d(var), 0.25, 189)
    cpu.batch_norm_update_running(rm, rv, mean, var, 0.25, 189)
    np.testing.assert_allclose(as_numpy(rm_d), rm, **tol)
    np.testing.assert_allclose(as_numpy(rv_d), rv, **tol)


def test_functional_batch_norm_matches_the_layer(device):
    x = to_device(inputs((4, 3, 2, 2), 0), device)
    m = nn.BatchNorm2d(3).double().to(device)
    rm, rv = to_device(np.zeros(3), device), to_device(np.ones(3), device)
    y = gpucnn.functional.batch_norm(x, rm, rv, training=True, momentum=0.1)
    np.testing.assert_allclose(as_numpy(y), as_numpy(m(x)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(as_numpy(rm), as_numpy(m.running_mean), rtol=1e-12)
    np.testing.assert_allclose(as_numpy(rv), as_numpy(m.running_var), rtol=1e-12)


@pytest.mark.parametrize("make, x_shape, message", [
    (lambda: nn.BatchNorm2d(3), (2, 4, 5, 5), r"BatchNorm2d: expected input\[2, 4, 5, 5\] to have 3 channels"),
    (lambda: nn.BatchNorm2d(3), (2, 3, 5), r"BatchNorm2d: expected 4D \(N, C, H, W\) input"),
    (lambda: nn.BatchNorm1d(3), (2, 3, 4, 4), r"BatchNorm1d: expected 2D \(N, C\) or 3D \(N, C, L\) input"),
    (lambda: nn.BatchNorm1d(3), (1, 3), r"BatchNorm1d: expected more than 1 value per channel when training"),
    (lambda: nn.BatchNorm2d(3, affine=False), (2, 2, 3, 3), r"to have 3 channels, but got 2"),
])
def test_bad_input_is_a_clear_error(make, x_shape, message):
    m = make()
    before = m.state_dict()
    with pytest.raises(ValueError, match=message):
        m(np.ones(x_shape, np.float32))
    for name, value in m.state_dict().items():  # refused before any statistic moved
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_features=0), "num_features must be positive"),
    (dict(num_features=3, eps=-1.0), "eps must be a non-negative number, but got eps=-1.0"),
    (dict(num_features=3, momentum=1.5), r"momentum must be None or a number in \[0, 1\], but got momentum=1.5"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nn.BatchNorm2d(**kwargs)


def test_eval_mode_with_batch_of_one_is_allowed():
    m = nn.BatchNorm1d(3).eval()
    assert m(np.ones((1, 3), np.float32)).shape == (1, 3)
