"""The architecture spec: presets, shapes through the net, and clear errors."""
import numpy as np
import pytest

from gpucnn import arch, nn


def layer_names(model):
    return [type(m).__name__ for m in model]


def test_lenet5_preset_fits_digits_mnist_and_cifar():
    for in_shape, flat in [((1, 8, 8), 16 * 2 * 2), ((1, 28, 28), 16 * 7 * 7), ((3, 32, 32), 16 * 8 * 8)]:
        model = arch.build_model("lenet5", in_shape, 10)
        assert layer_names(model) == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
                                      "Linear", "ReLU", "Linear", "ReLU", "Linear"]
        assert model[7].in_features == flat and model[11].out_features == 10
        x = np.zeros((2,) + in_shape, dtype=np.float32)
        assert model(x).shape == (2, 10)


def test_spec_strides_avgpool_and_no_fc():
    model = arch.build_model("conv4k3s2p1 avgpool2s1 conv5k1", (2, 9, 9), 3)
    assert layer_names(model) == ["Conv2d", "ReLU", "AvgPool2d", "Conv2d", "ReLU", "Flatten", "Linear"]
    assert model[0].stride == (2, 2) and model[0].padding == (1, 1) and model[2].stride == (1, 1)
    assert model[6].in_features == 5 * 4 * 4  # 9 -> 5 (stride 2, pad 1) -> 4 (pool 2, stride 1)
    assert model(np.zeros((1, 2, 9, 9), np.float32)).shape == (1, 3)


def test_vgg_preset_state_dict_keys_follow_layer_positions():
    keys = list(arch.build_model("vgg", (1, 8, 8), 10).state_dict())
    assert keys[:4] == ["0.weight", "0.bias", "2.weight", "2.bias"] and keys[-1] == "13.bias"  # 4 convs + 4 ReLUs + 2 pools + Flatten + fc + ReLU + classifier


@pytest.mark.parametrize("spec, message", [
    ("", "expected a preset name"),
    ("conv6k5 relu", "unknown layer 'relu'"),
    ("conv6k0", r"kernel size in 'conv6k0' must be positive, but got 0"),
    ("fc10 conv6k3", "'conv6k3' comes after a fully connected layer"),
    ("conv6k9", r"'conv6k9' \(layer 1 of the spec\) leaves no output \(size 0x0\): it gets a 8x8 input from "
                r"images of shape \[1, 8, 8\]"),
    ("conv4k3p1 pool2 pool2 pool2 pool2", r"'pool2' \(layer 5 of the spec\) leaves no output \(size 0x0\): it gets a 1x1 input"),
    ("fc10 res8", "'res8' comes after a fully connected layer"),
    ("conv4k3 drop1.0", r"the dropout probability in 'drop1.0' must be below 1, but got 1.0"),
    ("res8x0", r"block count in 'res8x0' must be positive, but got 0"),
    ("conv4k3 bn", "unknown layer 'bn'"),
    ("resnet21", r"a CIFAR-style ResNet has depth 6n \+ 2 \(8, 14, 20, 32, 44, 56, 110, ...\), but got 21"),
])
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        arch.build_model(spec, (1, 8, 8), 10)


def test_resolve_keeps_specs_and_expands_presets():
    assert arch.resolve("lenet5") == arch.PRESETS["lenet5"]
    assert arch.resolve("conv2k3") == "conv2k3"
    assert isinstance(arch.build_model("fc7", (1, 2, 2), 2)[1], nn.Linear)


def test_batchnorm_residual_blocks_global_pooling_and_dropout():
    model = arch.build_model("conv8k3p1bn res8 res16s2x2 gap drop0.5 fc12", (3, 9, 9), 4)
    assert layer_names(model) == ["Conv2d", "BatchNorm2d", "ReLU", "Residual", "ReLU", "Residual", "ReLU", "Residual",
                                  "ReLU", "AdaptiveAvgPool2d", "Dropout", "Flatten", "Linear", "ReLU", "Linear"]
    assert model[0].bias is None and model[10].p == 0.5
    assert model[3].shortcut is None  # 8 -> 8 channels, stride 1: the identity
    projection = model[5].shortcut  # 8 -> 16 channels, stride 2: 1x1 conv and BN
    assert layer_names(projection) == ["Conv2d", "BatchNorm2d"] and projection[0].stride == (2, 2)
    assert model[5].body[0].stride == (2, 2) and model[7].body[0].stride == (1, 1) and model[7].shortcut is None
    assert model[12].in_features == 16
    assert model(np.zeros((2, 3, 9, 9), np.float32)).shape == (2, 4)
    keys = list(model.state_dict())
    assert keys[:6] == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert "5.shortcut.1.running_var" in keys and "3.body.3.weight" in keys


def test_a_conv_without_bn_keeps_its_bias_and_a_resnet_without_gap_flattens_its_maps():
    model = arch.build_model("conv4k3p1 res6s2", (1, 8, 8), 3)
    assert layer_names(model) == ["Conv2d", "ReLU", "Residual", "ReLU", "Flatten", "Linear"]
    assert model[0].bias is not None and model[5].in_features == 6 * 4 * 4


def test_resnet_names():
    assert arch.resolve("resnet") == arch.PRESETS["resnet"] == "conv16k3p1bn res16x3 res32s2x3 res64s2x3 gap"
    assert arch.resolve("resnet32-w8") == "conv8k3p1bn res8x5 res16s2x5 res32s2x5 gap"
    assert arch.resolve("resnet-w32") == arch.resnet_spec(20, 32)
