"""kernels/pool.py: 2x2 stride-2 max pooling (values + argmax, scatter backward) and average
pooling.

torch: F.max_pool2d / F.avg_pool2d under no_grad; backward is autograd.grad for x.
"""
from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     torch, torch_case)

# The CNN's two pooling layers at batch 128, and a large one.
_SHAPES = [(128, 16, 28, 28), (128, 32, 14, 14), (64, 64, 56, 56)]
SHAPES = shape_labels(_SHAPES)
POOLS = ["max", "avg"]
TRAINING = [("maxpool2d 2x2", ((128, 16, 28, 28), "max")),
            ("avgpool2d 2x2", ((128, 16, 28, 28), "avg"))]
K = S = (2, 2)
P = (0, 0)


def make(impl, shape, pool):
    x = randn(shape, 0)
    n, c, h, w = shape
    g = randn((n, c, h // 2, w // 2), 1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        fn = {"max": t.nn.functional.max_pool2d, "avg": t.nn.functional.avg_pool2d}[pool]
        return torch_case(t, lambda xt: fn(xt, 2), [x], g, calls)
    if pool == "max":
        k = ops(impl, "maxpool2d_forward", "maxpool2d_backward")
        _, idx = k.maxpool2d_forward(x, K, S, P)
        return Case({"forward": lambda: k.maxpool2d_forward(x, K, S, P),
                     "backward": lambda: k.maxpool2d_backward(g, idx, x.shape)}, calls)
    k = ops(impl, "avgpool2d_forward", "avgpool2d_backward")
    return Case({"forward": lambda: k.avgpool2d_forward(x, K, S, P),
                 "backward": lambda: k.avgpool2d_backward(g, x.shape, K, S, P)}, calls)


class Pool2d(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"pool": POOLS}


@speedup_row("maxpool2d 128x16x28x28: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
