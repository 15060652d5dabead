"""Bad input gets a ValueError naming the layer, the rule and the value it got, worded
like PyTorch's, before any op runs; other misuse (backward first, mixed devices, no
CUDA) is just as clear."""
import re

import numpy as np
import pytest

from gpucnn import cuda, functional as F, nn, optim


def raises(*fragments):
    """pytest.raises(ValueError) whose message holds every fragment, in order."""
    return pytest.raises(ValueError, match=".*".join(re.escape(f) for f in fragments))


def zeros(*shape):
    return np.zeros(shape, dtype=np.float32)


# -- shapes of the input -------------------------------------------------------------

def test_wrong_channel_count_is_worded_like_pytorch():
    with raises("Conv2d: expected input[2, 5, 8, 8] to have 3 channels, but got 5 channels instead"):
        nn.Conv2d(3, 4, 3)(zeros(2, 5, 8, 8))
    with raises("Conv1d: expected input[1, 2, 8] to have 1 channels, but got 2 channels instead"):
        nn.Conv1d(1, 4, 3)(zeros(1, 2, 8))


@pytest.mark.parametrize("layer, shape, want", [
    (nn.Conv2d(3, 4, 3), (3, 8, 8), "Conv2d: expected 4D input (N, C, H, W), but got input of shape [3, 8, 8] (3D)"),
    (nn.Conv1d(3, 4, 3), (2, 3, 1, 8), "Conv1d: expected 3D input (N, C, L), but got input of shape [2, 3, 1, 8] (4D)"),
    (nn.MaxPool2d(2), (4, 4), "MaxPool2d: expected 4D input (N, C, H, W), but got input of shape [4, 4] (2D)"),
    (nn.AvgPool1d(2), (1, 1, 4, 4), "AvgPool1d: expected 3D input (N, C, L), but got input of shape [1, 1, 4, 4] (4D)"),
])
def test_wrong_rank(layer, shape, want):
    with raises(want):
        layer(zeros(*shape))


def test_input_smaller_than_the_kernel():
    with raises("Conv2d", "padded input size per channel: (4 x 6)", "kernel size: (5 x 5)",
                "can't be greater than actual input size", "[1, 3, 4, 6]"):
        nn.Conv2d(3, 1, 5)(zeros(1, 3, 4, 6))
    with raises("Conv1d", "(4)", "kernel size: (7)"):
        nn.Conv1d(1, 1, 7, padding=1)(zeros(1, 1, 2))


def test_padding_makes_room_for_the_kernel():
    assert nn.Conv2d(1, 1, 5, padding=1)(zeros(1, 1, 3, 3)).shape == (1, 1, 1, 1)


@pytest.mark.parametrize("pool, shape, kernel, want", [
    (nn.MaxPool2d, (1, 1, 3, 8), (4, 2), "(3 x 8); pooling window: (4 x 2)"),
    (nn.AvgPool2d, (1, 1, 5, 5), 6, "(5 x 5); pooling window: (6 x 6)"),
    (nn.MaxPool1d, (2, 3, 2), 3, "(2); pooling window: (3)"),
])
def test_pooling_window_larger_than_the_input(pool, shape, kernel, want):
    with raises(pool.__name__, want, "can't be greater than actual input size"):
        pool(kernel)(zeros(*shape))


def test_wrong_feature_count_for_linear():
    with raises("Linear: expected input[3, 5] to have 4 features", "but got 5 features instead"):
        nn.Linear(4, 2)(zeros(3, 5))


def test_non_float_and_non_array_input():
    with raises("Conv2d: expected input of dtype float32 or float64, but got int64"):
        nn.Conv2d(1, 1, 1)(np.zeros((1, 1, 2, 2), dtype=np.int64))
    with raises("relu: expected input to be a numpy or cupy array, but got list"):
        F.relu([1.0, -1.0])


def test_input_dtype_must_match_the_layer():
    with raises("Conv2d: input dtype (float64) and weight dtype (float32) should be the same"):
        nn.Conv2d(1, 1, 1)(np.zeros((1, 1, 2, 2)))
    with raises("Linear: input dtype (float32) and weight dtype (float64)"):
        nn.Linear(2, 2).double()(zeros(1, 2))


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


def test_functional_arguments_are_checked_too():
    with raises("conv2d: stride must be positive, but got stride=(1, 0)"):
        F.conv2d(zeros(1, 1, 4, 4), zeros(1, 1, 2, 2), stride=(1, 0))
    with raises("conv1d: padding must be non-negative, but got padding=(-2,)"):
        F.conv1d(zeros(1, 1, 4), zeros(1, 1, 2), padding=-2)
    with raises("max_pool2d: kernel_size must be positive, but got kernel_size=(0, 2)"):
        F.max_pool2d(zeros(1, 1, 4, 4), (0, 2))
    with raises("conv2d: expected a 4D weight, but got weight of shape [4, 3, 3]"):
        F.conv2d(zeros(1, 3, 8, 8), zeros(4, 3, 3))


# -- losses --------------------------------------------------------------------------

@pytest.mark.parametrize("labels, bad", [([0, 3], 3), ([-1, 0], -1)])
def test_labels_out_of_range(labels, bad):
    with raises(f"CrossEntropyLoss: target {bad} is out of bounds for 3 classes", "0 <= target < 3"):
        nn.CrossEntropyLoss()(zeros(2, 3), np.array(labels))
    with raises(f"cross_entropy: target {bad} is out of bounds"):
        F.cross_entropy(zeros(2, 3), np.array(labels))


def test_bad_loss_targets():
    with raises("CrossEntropyLoss: expected integer class indices as target, but got dtype float64"):
        nn.CrossEntropyLoss()(zeros(2, 3), np.array([0.0, 1.0]))
    with raises("CrossEntropyLoss: expected target of shape [2]", "but got target of shape [2, 1]"):
        nn.CrossEntropyLoss()(zeros(2, 3), np.array([[0], [1]]))
    with raises("CrossEntropyLoss: expected target to be a numpy or cupy array, but got list"):
        nn.CrossEntropyLoss()(zeros(2, 3), [0, 1])
    with raises("CrossEntropyLoss: expected 2D input (N, C)", "[2, 3, 1]"):
        nn.CrossEntropyLoss()(zeros(2, 3, 1), np.array([0, 1]))
    with raises("MSELoss: expected target of the input's shape [2, 3], but got target of shape [3, 2]"):
        nn.MSELoss()(zeros(2, 3), zeros(3, 2))


# -- state_dict ----------------------------------------------------------------------

def lenet_like():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


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


def test_state_dict_with_a_wrong_shape_changes_nothing():
    model = lenet_like()
    before = model.state_dict()
    sd = lenet_like().state_dict()
    sd["3.weight"] = np.zeros((8, 3))
    with raises("size mismatch for 3.weight: copying a param with shape [8, 3] from checkpoint, "
                "the shape in current model is [3, 8]"):
        model.load_state_dict(sd)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # not even the keys before 3.weight were copied


# -- misuse --------------------------------------------------------------------------

@pytest.mark.parametrize("layer, dy", [
    (nn.Conv2d(1, 1, 1), zeros(1, 1, 1, 1)), (nn.Conv1d(1, 1, 1), zeros(1, 1, 1)),
    (nn.MaxPool2d(2), zeros(1, 1, 1, 1)), (nn.AvgPool1d(2), zeros(1, 1, 1)),
    (nn.ReLU(), zeros(3)), (nn.Flatten(), zeros(1, 3)), (nn.Linear(1, 1), zeros(1, 1)),
    (nn.CrossEntropyLoss(), 1.0), (nn.MSELoss(), 1.0),
    (nn.Sequential(nn.Linear(1, 1), nn.ReLU()), zeros(1, 1)),
])
def test_backward_before_forward(layer, dy):
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(dy)


def test_cuda_without_cupy_or_emulator_names_the_extra(monkeypatch):
    monkeypatch.delenv("GPUCNN_CUDA_EMULATOR", raising=False)
    monkeypatch.setattr(cuda, "_cupy", None)
    monkeypatch.setattr(cuda, "_cupy_error", ImportError("No module named 'cupy'"))
    with pytest.raises(RuntimeError, match=re.escape("pip install gpucnn[cuda12]")):
        lenet_like().to("cuda")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', but got 'gpu'"):
        lenet_like().to("gpu")


def on_cuda(x):
    """x as a "cuda" array without any kernel: the emulator's array type, a view of x."""
    return x.view(cuda.EmulatedDeviceArray)


@pytest.mark.parametrize("call, want", [
    (lambda: nn.Conv2d(1, 1, 1)(on_cuda(zeros(1, 1, 2, 2))), "Conv2d: expected all arrays on one device, but got input on cuda, weight on cpu"),
    (lambda: nn.Linear(2, 1)(on_cuda(zeros(3, 2))), "Linear: expected all arrays on one device, but got input on cuda, weight on cpu"),
    (lambda: F.conv1d(zeros(1, 1, 4), on_cuda(zeros(1, 1, 2))), "conv1d: expected all arrays on one device, but got input on cpu, weight on cuda"),
    (lambda: nn.CrossEntropyLoss()(zeros(2, 3), on_cuda(np.array([0, 1]))), "CrossEntropyLoss: expected all arrays on one device, but got input on cpu, target on cuda"),
    (lambda: nn.MSELoss()(on_cuda(zeros(2)), zeros(2)), "MSELoss: expected all arrays on one device, but got input on cuda, target on cpu"),
])
def test_mixing_devices_is_a_clear_error(monkeypatch, call, want):
    monkeypatch.setenv("GPUCNN_CUDA_EMULATOR", "1")
    with raises(want):
        call()


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
