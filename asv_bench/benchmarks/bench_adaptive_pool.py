"""kernels/pool.py's adaptive pooling: average and max (values + argmax, scatter backward), to the
global (1, 1) pool (a network's head) and to 7x7 (bins of 4x4 here, and overlapping bins of 2-3
from 13x13).

torch: F.adaptive_avg_pool2d / F.adaptive_max_pool2d under no_grad; backward is autograd.grad for x.
"""
from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     torch, torch_case)

_SHAPES = [(64, 32, 28, 28), (128, 256, 13, 13)]
SHAPES = shape_labels(_SHAPES)
POOLS = ["avg", "max"]
SIZES = {"1x1": (1, 1), "7x7": (7, 7)}
TRAINING = [("adaptive avgpool2d (1, 1)", ((64, 32, 28, 28), "avg", "1x1")),
            ("adaptive maxpool2d (1, 1)", ((64, 32, 28, 28), "max", "1x1")),
            ("adaptive avgpool2d (7, 7)", ((64, 32, 28, 28), "avg", "7x7")),
            ("adaptive maxpool2d (7, 7)", ((64, 32, 28, 28), "max", "7x7"))]


def make(impl, shape, pool, size):
    out = SIZES[size]
    x = randn(shape, 0)
    g = randn(shape[:2] + out, 1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        fn = {"avg": F.adaptive_avg_pool2d, "max": F.adaptive_max_pool2d}[pool]
        return torch_case(t, lambda xt: fn(xt, out), [x], g, calls)
    if pool == "max":
        k = ops(impl, "adaptive_maxpool2d_forward", "adaptive_maxpool2d_backward")
        _, idx = k.adaptive_maxpool2d_forward(x, out)
        return Case({"forward": lambda: k.adaptive_maxpool2d_forward(x, out),
                     "backward": lambda: k.adaptive_maxpool2d_backward(g, idx, x.shape)}, calls)
    k = ops(impl, "adaptive_avgpool2d_forward", "adaptive_avgpool2d_backward")
    return Case({"forward": lambda: k.adaptive_avgpool2d_forward(x, out),
                 "backward": lambda: k.adaptive_avgpool2d_backward(g, x.shape)}, calls)


class AdaptivePool2d(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"pool": POOLS, "output_size": list(SIZES)}


@speedup_row("adaptive avgpool2d 64x32x28x28 -> (1, 1): numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
