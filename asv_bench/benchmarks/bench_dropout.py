"""kernels/dropout.py: inverted dropout (p = 0.2) with counter-based hashed masks: forward (mask +
scaled copy) and backward (from the uint8 mask).

torch: F.dropout(x, 0.2, training=True) under no_grad; backward is autograd.grad for x.
"""
from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     torch, torch_case)

_SHAPES = [(64, 128), (128, 512), (128, 32, 14, 14), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
TRAINING = [("dropout", ((128, 512),))]
P = 0.2


def make(impl, shape):
    x = randn(shape, 0)
    g = randn(shape, 1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        return torch_case(t, lambda xt: t.nn.functional.dropout(xt, P, True), [x], g, calls)
    k = ops(impl, "dropout_forward", "dropout_backward")
    _, mask = k.dropout_forward(x, P, 1234, 1)
    return Case({"forward": lambda: k.dropout_forward(x, P, 1234, 1),
                 "backward": lambda: k.dropout_backward(g, mask, P)}, calls)


class Dropout(Family):
    make = staticmethod(make)
    shapes = SHAPES


@speedup_row("dropout 128x512: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
