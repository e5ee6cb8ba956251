"""kernels/activations.py: elementwise activation forward and backward (from the output y).

torch: F.relu / torch.sigmoid / torch.tanh under no_grad; backward is autograd.grad for x.
"""
from kernels.activations import RELU, SIGMOID, TANH

from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     torch, torch_case)

_SHAPES = [(64, 128), (128, 512), (128, 32, 14, 14), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
ACTS = {"relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}
TRAINING = [("relu", ((128, 512), "relu")), ("sigmoid", ((128, 512), "sigmoid"))]


def make(impl, shape, act):
    x = randn(shape, 0)
    g = randn(shape, 1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        fn = {"relu": t.nn.functional.relu, "sigmoid": t.sigmoid, "tanh": t.tanh}[act]
        return torch_case(t, fn, [x], g, calls)
    k = ops(impl, "activation_forward", "activation_backward")
    code = ACTS[act]
    y = k.activation_forward(x, code, 0.0)
    return Case({"forward": lambda: k.activation_forward(x, code, 0.0),
                 "backward": lambda: k.activation_backward(g, y, code, 0.0)}, calls)


class Activations(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"activation": list(ACTS)}


@speedup_row("relu 128x512: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
