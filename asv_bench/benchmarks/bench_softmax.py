"""kernels/softmax.py: softmax and log-softmax over rows (forward, backward), and cross-entropy on
logits, fused with its gradient, with int labels (cross_entropy) or class probabilities
(cross_entropy_probs: soft targets, each row a distribution).

cross_entropy, cross_entropy_probs: forward is the loss alone; backward is loss *and* gradient
(one fused pass here; torch: F.cross_entropy forward + autograd.grad). softmax/log_softmax torch:
F.softmax / F.log_softmax under no_grad; backward is autograd.grad for x.
"""
from kernels.softmax import MEAN

from .common import (Case, Family, calls_for, labels, ops, randn, shape_labels, speedup,
                     speedup_row, tensor, torch, torch_case, uniform)

# (N, C): MNIST logits of a batch of 128, a wide softmax, a large one.
_SHAPES = [(128, 10), (128, 1000), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
OPS = ["softmax", "log_softmax", "cross_entropy", "cross_entropy_probs"]
TRAINING = [("cross_entropy", ((128, 10), "cross_entropy")), ("softmax", ((128, 10), "softmax")),
            ("log_softmax", ((128, 10), "log_softmax")),
            ("cross_entropy_probs", ((128, 10), "cross_entropy_probs"))]


def make(impl, shape, op):
    n, c = shape
    x = randn(shape, 0, scale=3.0)
    g = randn(shape, 1)
    if op == "cross_entropy_probs":
        u = uniform(shape, 0.0, 1.0, 2)
        t_idx = u / u.sum(axis=1, keepdims=True)     # the target: a distribution per row
    else:
        t_idx = labels(n, c)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        if op in ("cross_entropy", "cross_entropy_probs"):
            xt = tensor(t, x, True)
            lt = t.from_numpy(t_idx)

            def forward():
                with t.no_grad():
                    F.cross_entropy(xt, lt)

            def backward():
                t.autograd.grad(F.cross_entropy(xt, lt), xt)
            return Case({"forward": forward, "backward": backward}, calls)
        fn = {"softmax": F.softmax, "log_softmax": F.log_softmax}[op]
        return torch_case(t, lambda xt: fn(xt, dim=1), [x], g, calls)
    if op == "cross_entropy":
        k = ops(impl, "cross_entropy_forward")
        return Case({"forward": lambda: k.cross_entropy_forward(x, t_idx, MEAN, False),
                     "backward": lambda: k.cross_entropy_forward(x, t_idx, MEAN, True)}, calls)
    if op == "cross_entropy_probs":
        k = ops(impl, "cross_entropy_probs_forward")
        return Case({"forward": lambda: k.cross_entropy_probs_forward(x, t_idx, MEAN, False),
                     "backward": lambda: k.cross_entropy_probs_forward(x, t_idx, MEAN, True)},
                    calls)
    k = ops(impl, f"{op}_forward", f"{op}_backward")
    fwd, bwd = getattr(k, f"{op}_forward"), getattr(k, f"{op}_backward")
    y = fwd(x)
    return Case({"forward": lambda: fwd(x), "backward": lambda: bwd(g, y)}, calls)


class Softmax(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"op": OPS}


@speedup_row("cross-entropy 128x10: numba speed-up over numpy (loss, loss+grad)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
