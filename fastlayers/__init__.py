"""fastlayers: neural-network layers for NumPy arrays, with Numba-compiled kernels.

PyTorch-style modules with an explicit backward::

    import fastlayers as fl
    import numpy as np

    fl.manual_seed(0)
    model = fl.Sequential(fl.Linear(784, 128), fl.ReLU(), fl.Linear(128, 10))
    loss_fn = fl.CrossEntropyLoss()
    opt = fl.SGD(model.parameters(), lr=0.05)

    loss = loss_fn(model(x), y)       # x float32 (N, 784), y int (N,)
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
"""
import kernels  # noqa: F401  (first: it settles the thread pools, see kernels/__init__.py)
from fastlayers.activation import (ELU, GELU, Hardtanh, LeakyReLU, LogSoftmax, ReLU, ReLU6, SiLU,
                                   Sigmoid, Softmax, Softplus, Tanh)
from fastlayers.backend import get_backend, set_backend, use_backend
from fastlayers.clip import clip_grad_norm_, clip_grad_value_
from fastlayers.container import ModuleDict, ModuleList
from fastlayers.conv import Conv2d, SimpleConv
from fastlayers.data import DataLoader, load_dataset
from fastlayers.dropout import Dropout, Dropout2d
from fastlayers.grad_mode import is_grad_enabled, no_grad, set_grad_enabled
from fastlayers.gradcheck import gradcheck
from fastlayers.layernorm import LayerNorm
from fastlayers.linear import Flatten, Identity, Linear
from fastlayers.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropy, CrossEntropyLoss, HuberLoss,
                             L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from fastlayers.module import Module, Parameter, Sequential
from fastlayers.batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d, SyncBatchNorm
from fastlayers.optim import SGD, Adam, AdamW, Momentum, NAdam, Nadam, Optimizer, RMSprop
from fastlayers.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from fastlayers.random import get_rng_state, manual_seed, set_rng_state
from fastlayers.serialization import CheckpointError, load, save
from fastlayers.sparse import Embedding
from fastlayers import init, runtime, transforms
from fastlayers.runtime import (are_deterministic_algorithms_enabled, get_blas_threads,
                                get_num_threads, keep_freed_memory, set_num_threads,
                                use_deterministic_algorithms)

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AdamW",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "CheckpointError",
    "clip_grad_norm_",
    "clip_grad_value_",
    "get_rng_state",
    "load",
    "save",
    "set_rng_state",
    "are_deterministic_algorithms_enabled",
    "AvgPool2d",
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "Conv2d",
    "CrossEntropy",
    "CrossEntropyLoss",
    "DataLoader",
    "Dropout",
    "Dropout2d",
    "ELU",
    "Embedding",
    "Flatten",
    "from_torch",
    "GELU",
    "get_backend",
    "get_blas_threads",
    "get_num_threads",
    "gradcheck",
    "Hardtanh",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
    "HuberLoss",
    "Identity",
    "init",
    "keep_freed_memory",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "load_dataset",
    "LogSoftmax",
    "manual_seed",
    "MaxPool2d",
    "Module",
    "ModuleDict",
    "ModuleList",
    "Momentum",
    "MSELoss",
    "NAdam",
    "Nadam",
    "NLLLoss",
    "Optimizer",
    "Parameter",
    "ReLU",
    "ReLU6",
    "RMSprop",
    "Sequential",
    "set_backend",
    "set_num_threads",
    "SGD",
    "Sigmoid",
    "SiLU",
    "SimpleConv",
    "SmoothL1Loss",
    "SyncBatchNorm",
    "Softmax",
    "Softplus",
    "Tanh",
    "to_torch",
    "transforms",
    "use_backend",
    "use_deterministic_algorithms",
]



def __getattr__(name):
    """``from_torch`` and ``to_torch`` (fastlayers/torch_bridge.py) and ``distributed``
    (fastlayers/distributed.py), imported on first use: they need PyTorch and mpi4py, which
    fastlayers itself does not."""
    if name in ("from_torch", "to_torch"):
        from fastlayers import torch_bridge
        return getattr(torch_bridge, name)
    if name == "distributed":
        import importlib
        return importlib.import_module("fastlayers.distributed")
    raise AttributeError(f"module 'fastlayers' has no attribute {name!r}")


runtime.settle()   # BLAS threads; Numba's start with the first parallel kernel
runtime.keep_freed_memory_at_import()   # FASTLAYERS_KEEP_FREED_MEMORY=0 leaves glibc as it is
