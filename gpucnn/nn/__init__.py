"""Layers with torch.nn's names and argument orders."""
from .activation import ReLU
from .conv import Conv1d, Conv2d
from .init import manual_seed
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential
from .pooling import AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d

__all__ = [
    "AvgPool1d", "AvgPool2d", "Conv1d", "Conv2d", "CrossEntropyLoss", "Flatten", "Linear",
    "MSELoss", "MaxPool1d", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential", "manual_seed",
]
