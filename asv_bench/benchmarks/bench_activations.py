"""kernels/activations.py: elementwise activation forward and backward (from the output y, or the
input x for GELU, SiLU, ELU and Softplus); and the passes fused around a Linear's GEMM (the
BiasActivation family): bias + activation forward (bias_act_forward), activation backward + bias
gradient (act_bias_backward).

torch: the torch.nn.functional op under no_grad (of z + b for the bias passes); backward is
autograd.grad for x (for z and b).
"""
import numpy as np

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
# The Linear outputs of the speed-run models: the mlp's hidden layer, the mlp-bn's first, a head.
_BIAS_SHAPES = [(64, 128), (128, 512), (128, 10)]
BIAS_SHAPES = shape_labels(_BIAS_SHAPES)
# The speed-run models' two: identity (a Linear before a BatchNorm, every head) and relu (the mlp's
# hidden Linear, in place: its backward reads y).
BIAS_ACTS = {"identity": (A.IDENTITY, A.NO_PARAMS, lambda t, x: x), "relu": ACTS["relu"]}


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


def make_bias(impl, shape, act):
    """bias_act_forward / act_bias_backward of z (N, D) and a bias (D,), as linear_forward and
    linear_backward call them after the GEMM. The bias is zero, so that the in-place z + b leaves z
    as it is from call to call (the add costs the same)."""
    z = randn(shape, 0).copy()
    b = np.zeros(shape[1], z.dtype)
    g = randn(shape, 1)
    calls = calls_for(z.size)
    code, params, call = BIAS_ACTS[act]
    if impl == "torch":
        t = torch()
        return torch_case(t, lambda zt, bt: call(t, zt + bt), [z, b], g, calls)
    k = ops(impl, "bias_act_forward", "act_bias_backward")
    out = np.empty_like(z) if code in A.NEEDS_INPUT else z
    k.bias_act_forward(z, b, out, code, params)
    s = A.saved_for_backward(code, z, out)
    return Case({"forward": lambda: k.bias_act_forward(z, b, out, code, params),
                 "backward": lambda: k.act_bias_backward(g, s, code, params)}, calls)


TRAINING = [("relu", ((128, 512), "relu")), ("sigmoid", ((128, 512), "sigmoid")),
            ("gelu", ((128, 512), "gelu")),
            ("bias+relu (mlp hidden)", ((64, 128), "relu"), make_bias),
            ("bias+identity (mlp-bn first Linear)", ((128, 512), "identity"), make_bias)]


class Activations(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"activation": list(ACTS)}


class BiasActivation(Family):
    make = staticmethod(make_bias)
    shapes = BIAS_SHAPES
    axes = {"activation": list(BIAS_ACTS)}


@speedup_row("relu 128x512: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


@speedup_row("gelu 128x512: numba speed-up over numpy (fwd+bwd)")
def track_gelu_numba_speedup():
    return speedup(make, *TRAINING[2][1])


@speedup_row("bias+relu 64x128 (the mlp's hidden Linear): numba speed-up over numpy (fwd+bwd)")
def track_bias_relu_numba_speedup():
    return speedup(make_bias, *TRAINING[3][1])
