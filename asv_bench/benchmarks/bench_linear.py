"""kernels/linear.py: y = relu(x @ w.T + b) (GEMM + fused bias/activation pass) and its backward
(fused activation/bias gradient, dw += g.T @ x, dx = g @ w).

torch: F.relu(F.linear(x, w, b)) under no_grad; backward is autograd.grad for (x, w, b).
"""
from kernels.activations import NO_PARAMS, RELU

from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     torch, torch_case)

# (N, in, out): the MLP's first layer, the MLP-BN's first layer, one large GEMM.
_SHAPES = [(64, 784, 128), (128, 784, 512), (128, 512, 256), (4096, 1024, 1024)]
SHAPES = shape_labels(_SHAPES)
TRAINING = [("linear+relu", ((64, 784, 128),))]


def make(impl, shape):
    n, din, dout = shape
    x = randn((n, din), 0)
    w = randn((dout, din), 1, scale=din ** -0.5)
    b = randn((dout,), 2, scale=0.1)
    g = randn((n, dout), 3)
    calls = calls_for(n * dout, 8)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        return torch_case(t, lambda *xwb: F.relu(F.linear(*xwb)), [x, w, b], g, calls)
    k = ops(impl, "linear_forward", "linear_backward")
    _, saved = k.linear_forward(x, w, b, RELU, NO_PARAMS)
    dw = w * 0
    db = b * 0
    return Case({"forward": lambda: k.linear_forward(x, w, b, RELU, NO_PARAMS),
                 "backward": lambda: k.linear_backward(g, x, w, saved, RELU, NO_PARAMS, dw, db,
                                                       True)},
                calls)


class Linear(Family):
    make = staticmethod(make)
    shapes = SHAPES
    timeout = 180


@speedup_row("linear+relu 64x784x128: numba speed-up over numpy (fwd+bwd)", timeout=180)
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
