"""kernels/activations.py: elementwise activation forward and backward (from the output y, or the
input x for GELU, SiLU, ELU and Softplus).

torch: the torch.nn.functional op under no_grad; backward is autograd.grad for x.
"""
from kernels import activations as A

from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     torch, torch_case)

_SHAPES = [(64, 128), (128, 512), (128, 32, 14, 14), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
# name: (act code, params, the torch call given the torch module)
ACTS = {
    "relu": (A.RELU, A.NO_PARAMS, lambda t, x: t.nn.functional.relu(x)),
    "sigmoid": (A.SIGMOID, A.NO_PARAMS, lambda t, x: t.sigmoid(x)),
    "tanh": (A.TANH, A.NO_PARAMS, lambda t, x: t.tanh(x)),
    "gelu": (A.GELU, A.NO_PARAMS, lambda t, x: t.nn.functional.gelu(x)),
    "gelu_tanh": (A.GELU_TANH, A.NO_PARAMS,
                  lambda t, x: t.nn.functional.gelu(x, approximate="tanh")),
    "silu": (A.SILU, A.NO_PARAMS, lambda t, x: t.nn.functional.silu(x)),
    "hardtanh": (A.HARDTANH, (-1.0, 1.0), lambda t, x: t.nn.functional.hardtanh(x)),
    "relu6": (A.HARDTANH, (0.0, 6.0), lambda t, x: t.nn.functional.relu6(x)),
    "elu": (A.ELU, (1.0, 0.0), lambda t, x: t.nn.functional.elu(x)),
    "softplus": (A.SOFTPLUS, (1.0, 20.0), lambda t, x: t.nn.functional.softplus(x)),
}
TRAINING = [("relu", ((128, 512), "relu")), ("sigmoid", ((128, 512), "sigmoid")),
            ("gelu", ((128, 512), "gelu"))]


def make(impl, shape, act):
    x = randn(shape, 0)
    g = randn(shape, 1)
    calls = calls_for(x.size)
    code, params, call = ACTS[act]
    if impl == "torch":
        t = torch()
        return torch_case(t, lambda x: call(t, x), [x], g, calls)
    k = ops(impl, "activation_forward", "activation_backward")
    s = A.saved_for_backward(code, x, k.activation_forward(x, code, params))
    return Case({"forward": lambda: k.activation_forward(x, code, params),
                 "backward": lambda: k.activation_backward(g, s, code, params)}, calls)


class Activations(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"activation": list(ACTS)}


@speedup_row("relu 128x512: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


@speedup_row("gelu 128x512: numba speed-up over numpy (fwd+bwd)")
def track_gelu_numba_speedup():
    return speedup(make, *TRAINING[2][1])
