"""The three speed-run models, as the notebooks and the issues define them.

    mlp     784-128-10, ReLU                                       input (N, 784)
    mlp-bn  784-512-256-128-10; BatchNorm1d, ReLU, Dropout(0.4/0.2/0.2) after each hidden Linear
    cnn     Conv2d(1,16,3,p=1), BatchNorm2d, ReLU, MaxPool2d(2); Conv2d(16,32,3,p=1), BatchNorm2d,
            ReLU, MaxPool2d(2); Flatten; Linear(1568,10)               input (N, 1, 28, 28)
    cnn-wide  the cnn with 32 and 64 channels, then Linear(3136,128), ReLU, Dropout(0.3),
              Linear(128,10)                                         input (N, 1, 28, 28)
    mlp-wide  784-256-10, ReLU                                       input (N, 784)

The wide models serve the recipes (fastlayers/recipes.py).

Each builder draws its initial weights from ``fastlayers.manual_seed``'s generator.
"""
import numpy as np

from fastlayers.activation import ReLU
from fastlayers.conv import Conv2d
from fastlayers.dropout import Dropout
from fastlayers.linear import Flatten, Linear
from fastlayers.module import Sequential
from fastlayers.batchnorm import BatchNorm1d, BatchNorm2d
from fastlayers.pooling import MaxPool2d


def mlp(dtype=np.float32):
    return Sequential(Linear(784, 128, dtype=dtype), ReLU(), Linear(128, 10, dtype=dtype))


def mlp_bn(dtype=np.float32):
    layers = []
    for n_in, n_out, p in [(784, 512, 0.4), (512, 256, 0.2), (256, 128, 0.2)]:
        layers += [Linear(n_in, n_out, dtype=dtype), BatchNorm1d(n_out, dtype=dtype), ReLU(),
                   Dropout(p)]
    return Sequential(*layers, Linear(128, 10, dtype=dtype))


def mlp_wide(dtype=np.float32):
    return Sequential(Linear(784, 256, dtype=dtype), ReLU(), Linear(256, 10, dtype=dtype))


def _conv_blocks(c1, c2, dtype):
    return [Conv2d(1, c1, 3, padding=1, dtype=dtype), BatchNorm2d(c1, dtype=dtype), ReLU(),
            MaxPool2d(2),
            Conv2d(c1, c2, 3, padding=1, dtype=dtype), BatchNorm2d(c2, dtype=dtype), ReLU(),
            MaxPool2d(2), Flatten()]


def cnn(dtype=np.float32):
    return Sequential(*_conv_blocks(16, 32, dtype), Linear(32 * 7 * 7, 10, dtype=dtype))


def cnn_wide(dtype=np.float32):
    return Sequential(*_conv_blocks(32, 64, dtype), Linear(64 * 7 * 7, 128, dtype=dtype), ReLU(),
                      Dropout(0.3), Linear(128, 10, dtype=dtype))


MODELS = {"mlp": mlp, "mlp-bn": mlp_bn, "cnn": cnn, "cnn-wide": cnn_wide, "mlp-wide": mlp_wide}

# The input layout each model takes: flat rows or (N, 1, 28, 28) images.
FLAT_INPUT = {"mlp": True, "mlp-bn": True, "cnn": False, "cnn-wide": False, "mlp-wide": True}


def build(name, dtype=np.float32):
    """The model called ``name`` (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](dtype)
