"""Bad input gets a ValueError naming the layer, the rule and the value it got, worded
like PyTorch's, before any op runs; other misuse (backward first, mixed devices, no
CUDA) is just as clear. Errors about the input fire with the same words on every device
of the `device` fixture, and no kernel is launched before them."""
import re

import numpy as np
import pytest

from gpucnn.backends.cuda import _kernels
from gpucnn import cuda, functional as F, nn, optim


@pytest.fixture(autouse=True)
def _no_kernel_launches(monkeypatch):
    """Every error here must come before the first kernel launch; a launch fails the test."""
    def launch(kernel, *args):
        pytest.fail(f"kernel {kernel} was launched")
    monkeypatch.setattr(_kernels, "launch_kernel", launch)


def raises(*fragments):
    """pytest.raises(ValueError) whose message holds every fragment, in order."""
    return pytest.raises(ValueError, match=".*".join(re.escape(f) for f in fragments))


def zeros(*shape, device="cpu"):
    return cuda.to_device(np.zeros(shape, dtype=np.float32), device)


# -- shapes of the input -------------------------------------------------------------

def test_wrong_channel_count_is_worded_like_pytorch(device):
    with raises("Conv2d: expected input[2, 5, 8, 8] to have 3 channels, but got 5 channels instead"):
        nn.Conv2d(3, 4, 3).to(device)(zeros(2, 5, 8, 8, device=device))
    with raises("Conv1d: expected input[1, 2, 8] to have 1 channels, but got 2 channels instead"):
        nn.Conv1d(1, 4, 3).to(device)(zeros(1, 2, 8, device=device))


@pytest.mark.parametrize("make, shape, want", [
    (lambda: nn.Conv2d(3, 4, 3), (3, 8, 8), "Conv2d: expected 4D input (N, C, H, W), but got input of shape [3, 8, 8] (3D)"),
    (lambda: nn.Conv1d(3, 4, 3), (2, 3, 1, 8), "Conv1d: expected 3D input (N, C, L), but got input of shape [2, 3, 1, 8] (4D)"),
    (lambda: nn.MaxPool2d(2), (4, 4), "MaxPool2d: expected 4D input (N, C, H, W), but got input of shape [4, 4] (2D)"),
    (lambda: nn.AvgPool1d(2), (1, 1, 4, 4), "AvgPool1d: expected 3D input (N, C, L), but got input of shape [1, 1, 4, 4] (4D)"),
], ids=["Conv2d", "Conv1d", "MaxPool2d", "AvgPool1d"])
def test_wrong_rank(device, make, shape, want):
    with raises(want):
        make().to(device)(zeros(*shape, device=device))


def test_input_smaller_than_the_kernel(device):
    with raises("Conv2d", "padded input size per channel: (4 x 6)", "kernel size: (5 x 5)",
                "can't be greater than actual input size", "[1, 3, 4, 6]"):
        nn.Conv2d(3, 1, 5).to(device)(zeros(1, 3, 4, 6, device=device))
    with raises("Conv1d", "(4)", "kernel size: (7)"):
        nn.Conv1d(1, 1, 7, padding=1).to(device)(zeros(1, 1, 2, device=device))


def test_padding_makes_room_for_the_kernel():
    assert nn.Conv2d(1, 1, 5, padding=1)(zeros(1, 1, 3, 3)).shape == (1, 1, 1, 1)


@pytest.mark.parametrize("pool, shape, kernel, want", [
    (nn.MaxPool2d, (1, 1, 3, 8), (4, 2), "(3 x 8); pooling window: (4 x 2)"),
    (nn.AvgPool2d, (1, 1, 5, 5), 6, "(5 x 5); pooling window: (6 x 6)"),
    (nn.MaxPool1d, (2, 3, 2), 3, "(2); pooling window: (3)"),
])
def test_pooling_window_larger_than_the_input(device, pool, shape, kernel, want):
    with raises(pool.__name__, want, "can't be greater than actual input size"):
        pool(kernel)(zeros(*shape, device=device))


def test_wrong_feature_count_for_linear(device):
    with raises("Linear: expected input[3, 5] to have 4 features", "but got 5 features instead"):
        nn.Linear(4, 2).to(device)(zeros(3, 5, device=device))


def test_non_float_and_non_array_input(device):
    with raises("Conv2d: expected input of dtype float32 or float64, but got int64"):
        nn.Conv2d(1, 1, 1).to(device)(cuda.to_device(np.zeros((1, 1, 2, 2), dtype=np.int64), device))
    with raises("max_pool2d: expected input of dtype float32 or float64, but got int32"):
        F.max_pool2d(cuda.to_device(np.zeros((1, 1, 2, 2), dtype=np.int32), device), 2)
    with raises("relu: expected input to be a numpy or cupy array, but got list"):
        F.relu([1.0, -1.0])


def test_input_dtype_must_match_the_layer(device):
    with raises("Conv2d: input dtype (float64) and weight dtype (float32) should be the same"):
        nn.Conv2d(1, 1, 1).to(device)(cuda.to_device(np.zeros((1, 1, 2, 2)), device))
    with raises("Linear: input dtype (float32) and weight dtype (float64)"):
        nn.Linear(2, 2).double().to(device)(zeros(1, 2, device=device))


# -- constructor arguments -----------------------------------------------------------

@pytest.mark.parametrize("make, want", [
    (lambda: nn.Conv2d(0, 4, 3), "Conv2d: in_channels must be positive, but got in_channels=0"),
    (lambda: nn.Conv1d(3, -2, 3), "Conv1d: out_channels must be positive, but got out_channels=-2"),
    (lambda: nn.Conv2d(3, 4, (3, 0)), "Conv2d: kernel_size must be positive, but got kernel_size=(3, 0)"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), "Conv2d: stride must be positive, but got stride=(0, 0)"),
    (lambda: nn.Conv1d(3, 4, 3, padding=-1), "Conv1d: padding must be non-negative, but got padding=(-1,)"),
    (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size must be positive, but got kernel_size=(0, 0)"),
    (lambda: nn.AvgPool1d(2, stride=-1), "AvgPool1d: stride must be positive, but got stride=(-1,)"),
    (lambda: nn.Linear(0, 3), "Linear: in_features must be positive, but got in_features=0"),
    (lambda: nn.Linear(3, -1), "Linear: out_features must be positive, but got out_features=-1"),
    (lambda: nn.Conv2d(2.5, 3, 2), "Conv2d: in_channels must be a positive int, but got in_channels=2.5"),
    (lambda: nn.Conv2d(True, 3, 2), "Conv2d: in_channels must be a positive int, but got in_channels=True"),
    (lambda: nn.Conv1d(2, 3, (2, 2)), "Conv1d: kernel_size must be an int or a tuple of 1 ints, but got kernel_size=(2, 2)"),
    (lambda: nn.Sequential(nn.ReLU(), 3), "Sequential: argument 1 must be a Module, but got int"),
])
def test_bad_constructor_arguments(make, want):
    with raises(want):
        make()


def test_functional_arguments_are_checked_too(device):
    with raises("conv2d: stride must be positive, but got stride=(1, 0)"):
        F.conv2d(zeros(1, 1, 4, 4, device=device), zeros(1, 1, 2, 2, device=device), stride=(1, 0))
    with raises("conv1d: padding must be non-negative, but got padding=(-2,)"):
        F.conv1d(zeros(1, 1, 4, device=device), zeros(1, 1, 2, device=device), padding=-2)
    with raises("max_pool2d: kernel_size must be positive, but got kernel_size=(0, 2)"):
        F.max_pool2d(zeros(1, 1, 4, 4, device=device), (0, 2))
    with raises("conv2d: expected a 4D weight, but got weight of shape [4, 3, 3]"):
        F.conv2d(zeros(1, 3, 8, 8, device=device), zeros(4, 3, 3, device=device))
    with raises("conv2d: input dtype (float32) and bias dtype (float64) should be the same"):
        F.conv2d(zeros(1, 1, 4, 4, device=device), zeros(1, 1, 2, 2, device=device), cuda.to_device(np.zeros(1), device))
    with raises("conv2d: expected weight to be a numpy or cupy array, but got list"):
        F.conv2d(zeros(1, 1, 4, 4, device=device), [[[[1.0]]]])
    with raises("conv2d: expected bias of shape [2] (one per output channel), but got bias of shape [3]"):
        F.conv2d(zeros(1, 1, 4, 4, device=device), zeros(2, 1, 2, 2, device=device), zeros(3, device=device))
    with raises("linear: expected bias of shape [4] (one per output feature), but got bias of shape [1]"):
        F.linear(zeros(2, 3, device=device), zeros(4, 3, device=device), zeros(1, device=device))
    with raises("conv2d: expected bias to be a numpy or cupy array, but got list"):
        F.conv2d(zeros(1, 1, 4, 4, device=device), zeros(1, 1, 2, 2, device=device), [0.0])
    with raises("linear: expected bias to be a numpy or cupy array, but got list"):
        F.linear(zeros(2, 3, device=device), zeros(4, 3, device=device), [0.0] * 4)


@pytest.mark.parametrize("start_dim, end_dim, shape", [(5, -1, (2, 3, 4, 4)), (1, -6, (2, 3, 4, 4)), (1, -1, ())])
def test_flatten_dims_out_of_range(device, start_dim, end_dim, shape):
    with raises("Flatten: dimension out of range", f"input of shape {list(shape)}"):
        nn.Flatten(start_dim, end_dim)(cuda.to_device(np.zeros(shape, np.float32), device))


# -- losses --------------------------------------------------------------------------

@pytest.mark.parametrize("labels, bad", [([0, 3], 3), ([-1, 0], -1)])
def test_labels_out_of_range(device, labels, bad):
    with raises(f"CrossEntropyLoss: target {bad} is out of bounds for 3 classes", "0 <= target < 3"):
        nn.CrossEntropyLoss()(zeros(2, 3, device=device), cuda.to_device(np.array(labels), device))
    with raises(f"cross_entropy: target {bad} is out of bounds"):
        F.cross_entropy(zeros(2, 3, device=device), cuda.to_device(np.array(labels), device))


def test_validate_args_false_skips_only_the_check_of_target_values(device):
    """The check that reads the targets back (a wait for the GPU on CuPy) is the one skipped."""
    trusting = nn.CrossEntropyLoss(validate_args=False)
    loss = trusting(zeros(2, 3, device=device), cuda.to_device(np.array([0, 2]), device))
    np.testing.assert_allclose(float(loss), np.log(3))
    with raises("CrossEntropyLoss: expected target of shape [2]", "but got target of shape [3]"):
        trusting(zeros(2, 3, device=device), cuda.to_device(np.array([0, 1, 2]), device))


def test_bad_loss_targets(device):
    logits = zeros(2, 3, device=device)
    with raises("CrossEntropyLoss: expected integer class indices as target, but got dtype float64"):
        nn.CrossEntropyLoss()(logits, cuda.to_device(np.array([0.0, 1.0]), device))
    with raises("CrossEntropyLoss: expected target of shape [2]", "but got target of shape [2, 1]"):
        nn.CrossEntropyLoss()(logits, cuda.to_device(np.array([[0], [1]]), device))
    with raises("CrossEntropyLoss: expected target to be a numpy or cupy array, but got list"):
        nn.CrossEntropyLoss()(logits, [0, 1])
    with raises("CrossEntropyLoss: expected 2D input (N, C)", "[2, 3, 1]"):
        nn.CrossEntropyLoss()(zeros(2, 3, 1, device=device), cuda.to_device(np.array([0, 1]), device))
    with raises("MSELoss: expected target of the input's shape [2, 3], but got target of shape [3, 2]"):
        nn.MSELoss()(logits, zeros(3, 2, device=device))
    with raises("MSELoss: expected target of dtype float32 or float64, but got int64"):
        nn.MSELoss()(logits, cuda.to_device(np.zeros((2, 3), dtype=np.int64), device))


# -- state_dict ----------------------------------------------------------------------

def lenet_like():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def test_assigning_over_a_parameter_keeps_the_registry_true():
    """bias = None removes the bias from parameters() and state_dict(), as in torch.nn; an array
    in a parameter's place would leave the old Parameter registered but unused."""
    m = nn.Linear(2, 3)
    m.bias = None
    assert list(m.state_dict()) == ["weight"] and len(m.parameters()) == 1
    assert m(zeros(1, 2)).shape == (1, 3)
    with raises("Linear: cannot assign ndarray as parameter 'weight' (Parameter or None expected)"):
        m.weight = np.zeros((3, 2), np.float32)


def test_state_dict_with_a_missing_key():
    sd = lenet_like().state_dict()
    del sd["3.bias"]
    with raises("Error(s) in loading state_dict for Sequential", "missing keys: ['3.bias']"):
        lenet_like().load_state_dict(sd)


def test_state_dict_with_an_unexpected_key():
    sd = lenet_like().state_dict()
    sd["4.weight"] = np.zeros(3)
    with raises("Error(s) in loading state_dict for Sequential", "unexpected keys: ['4.weight']"):
        lenet_like().load_state_dict(sd)


def test_non_strict_load_skips_missing_and_unexpected_keys():
    src, dst = lenet_like(), lenet_like()
    sd = src.state_dict()
    del sd["3.bias"]
    sd["4.weight"] = np.zeros(3)
    bias_before = dst[3].bias.data.copy()
    dst.load_state_dict(sd, strict=False)
    np.testing.assert_array_equal(dst[3].weight.data, src[3].weight.data)
    np.testing.assert_array_equal(dst[3].bias.data, bias_before)


def test_state_dict_with_a_wrong_shape_changes_nothing(device):
    model = lenet_like().to(device)
    before = model.state_dict()
    sd = lenet_like().state_dict()
    sd["3.weight"] = np.zeros((8, 3))
    with raises("size mismatch for 3.weight: copying a param with shape [8, 3] from checkpoint, "
                "the shape in current model is [3, 8]"):
        model.load_state_dict(sd)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # not even the keys before 3.weight were copied


# -- misuse --------------------------------------------------------------------------

@pytest.mark.parametrize("make, dy", [
    (lambda: nn.Conv2d(1, 1, 1), zeros(1, 1, 1, 1)), (lambda: nn.Conv1d(1, 1, 1), zeros(1, 1, 1)),
    (lambda: nn.MaxPool2d(2), zeros(1, 1, 1, 1)), (lambda: nn.AvgPool1d(2), zeros(1, 1, 1)),
    (lambda: nn.ReLU(), zeros(3)), (lambda: nn.Flatten(), zeros(1, 3)), (lambda: nn.Linear(1, 1), zeros(1, 1)),
    (lambda: nn.CrossEntropyLoss(), 1.0), (lambda: nn.MSELoss(), 1.0),
    (lambda: nn.Sequential(nn.Linear(1, 1), nn.ReLU()), zeros(1, 1)),
], ids=["Conv2d", "Conv1d", "MaxPool2d", "AvgPool1d", "ReLU", "Flatten", "Linear", "CrossEntropyLoss", "MSELoss",
        "Sequential"])
def test_backward_before_forward(device, make, dy):
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        make().to(device).backward(dy if np.isscalar(dy) else cuda.to_device(dy, device))


def test_cuda_without_cupy_or_emulator_names_the_extra(monkeypatch):
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)
    monkeypatch.setattr(cuda, "_cupy", None)
    monkeypatch.setattr(cuda, "_cupy_error", ImportError("No module named 'cupy'"))
    with pytest.raises(RuntimeError, match=re.escape('pip install -e ".[cuda12]" (or ".[cuda13]") in a clone')):
        lenet_like().to("cuda")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', but got 'gpu'"):
        lenet_like().to("gpu")


@pytest.mark.parametrize("call, want", [
    (lambda cuda_device: nn.Conv2d(1, 1, 1)(zeros(1, 1, 2, 2, device=cuda_device)),
     "Conv2d: expected all arrays on one device, but got input on cuda, weight on cpu"),
    (lambda cuda_device: nn.Linear(2, 1)(zeros(3, 2, device=cuda_device)),
     "Linear: expected all arrays on one device, but got input on cuda, weight on cpu"),
    (lambda cuda_device: F.conv1d(zeros(1, 1, 4), zeros(1, 1, 2, device=cuda_device)),
     "conv1d: expected all arrays on one device, but got input on cpu, weight on cuda"),
    (lambda cuda_device: nn.CrossEntropyLoss()(zeros(2, 3), cuda.to_device(np.array([0, 1]), cuda_device)),
     "CrossEntropyLoss: expected all arrays on one device, but got input on cpu, target on cuda"),
    (lambda cuda_device: nn.MSELoss()(zeros(2, device=cuda_device), zeros(2)),
     "MSELoss: expected all arrays on one device, but got input on cuda, target on cpu"),
], ids=["Conv2d", "Linear", "conv1d", "CrossEntropyLoss", "MSELoss"])
def test_mixing_devices_is_a_clear_error(cuda_device, call, want):
    with raises(want):
        call(cuda_device)


@pytest.mark.parametrize("make, want", [
    (lambda p: optim.SGD([], lr=0.1), "SGD: got an empty parameter list"),
    (lambda p: optim.SGD(p, lr=-1), "SGD: invalid learning rate: -1"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "SGD: invalid momentum value: -0.5"),
    (lambda p: optim.Adam(p, weight_decay=-1), "Adam: invalid weight_decay value: -1"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), "Adam: invalid beta parameters: (0.9, 1.0)"),
    (lambda p: optim.Adam(p, eps=-1e-8), "Adam: invalid epsilon value: -1e-08"),
])
def test_bad_optimizer_arguments(make, want):
    with raises(want):
        make(lenet_like().parameters())


def test_a_torch_tensor_is_refused_as_not_a_numpy_or_cupy_array(device):
    torch = pytest.importorskip("torch")
    with raises("Conv2d: expected input to be a numpy or cupy array, but got torch.Tensor"):
        nn.Conv2d(1, 1, 1).to(device)(torch.zeros(1, 1, 2, 2))
    with raises("relu: expected input to be a numpy or cupy array, but got list"):
        F.relu([1.0])


def test_flatten_backward_checks_dy_and_names_the_layer(device):
    flatten = nn.Flatten()
    flatten(zeros(2, 3, 4, device=device))
    with raises("Flatten.backward: expected dy of the output's shape [2, 12] and dtype float32, but got dy of shape [2, 11]"):
        flatten.backward(zeros(2, 11, device=device))
    assert flatten.backward(zeros(2, 12, device=device)).shape == (2, 3, 4)


def test_load_state_dict_of_none_is_a_clear_error():
    with raises("Sequential.load_state_dict: expected state_dict to be dict-like, but got NoneType"):
        nn.Sequential(nn.Linear(2, 1)).load_state_dict(None)
