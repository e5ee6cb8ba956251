"""kernels/dropout.py: inverted dropout (p = 0.2) with counter-based hashed masks: forward (mask +
scaled copy) and backward (from the uint8 mask); per element (Dropout) and per channel (Dropout2d:
one mask byte per (n, c) plane, the kernels run on the (N C, H W) rows as the module passes them).

torch: F.dropout(x, 0.2, training=True) / F.dropout2d under no_grad; backward is autograd.grad for
x.
"""
from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     torch, torch_case)

_SHAPES = [(64, 128), (128, 512), (128, 32, 14, 14), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
# The cnn's two convolution outputs at batch 128 (where a Dropout2d would go).
_CHANNEL_SHAPES = [(128, 32, 14, 14), (128, 16, 28, 28)]
CHANNEL_SHAPES = shape_labels(_CHANNEL_SHAPES)
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


def make_channels(impl, shape):
    x = randn(shape, 0)
    g = randn(shape, 1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        return torch_case(t, lambda xt: t.nn.functional.dropout2d(xt, P, True), [x], g, calls)
    k = ops(impl, "dropout_channels_forward", "dropout_channels_backward")
    rows = (shape[0] * shape[1], -1)
    xr, gr = x.reshape(rows), g.reshape(rows)
    _, mask = k.dropout_channels_forward(xr, P, 1234, 1)
    return Case({"forward": lambda: k.dropout_channels_forward(xr, P, 1234, 1),
                 "backward": lambda: k.dropout_channels_backward(gr, mask, P)}, calls)


TRAINING = [("dropout", ((128, 512),)),
            ("dropout2d", ((128, 32, 14, 14),), make_channels)]


class Dropout(Family):
    make = staticmethod(make)
    shapes = SHAPES


@speedup_row("dropout 128x512: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


class Dropout2d(Family):
    make = staticmethod(make_channels)
    shapes = CHANNEL_SHAPES


@speedup_row("dropout2d 128x32x14x14: numba speed-up over numpy (fwd+bwd)")
def track_dropout2d_numba_speedup():
    return speedup(make_channels, *TRAINING[1][1])
