"""Layers with torch.nn's names and argument orders."""
from .activation import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from .adaptive_pooling import AdaptiveAvgPool2d
from .batchnorm import BatchNorm1d, BatchNorm2d
from .conv import Conv1d, Conv2d
from .dropout import Dropout
from .init import manual_seed
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential
from .pooling import AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .residual import Identity, Residual

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool1d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv1d", "Conv2d",
    "CrossEntropyLoss", "Dropout", "Flatten", "GELU", "Identity", "LeakyReLU", "Linear", "MSELoss",
    "MaxPool1d", "MaxPool2d", "Module", "Parameter", "ReLU", "Residual", "Sequential", "Sigmoid",
    "Tanh", "manual_seed",
]
