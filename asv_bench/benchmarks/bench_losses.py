"""kernels/losses.py: MSE, BCE, BCE-with-logits and NLL, each fused with its gradient.

forward is the loss alone (need_grad=False); backward is loss *and* gradient (one fused pass here;
torch: the F.*_loss forward + autograd.grad for the input).
"""
from kernels.losses import MEAN

from .common import (Case, Family, calls_for, labels, ops, randn, shape_labels, speedup,
                     speedup_row, tensor, torch, uniform)

_SHAPES = [(128, 10), (128, 512), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
LOSSES = ["mse", "bce", "bce_logits", "nll"]
TRAINING = [("mse", ((128, 512), "mse")), ("bce_logits", ((128, 512), "bce_logits")),
            ("nll", ((128, 10), "nll"))]


def make(impl, shape, loss):
    n, c = shape
    calls = calls_for(n * c)
    if loss == "mse":
        inp, target = randn(shape, 0), randn(shape, 1)
    elif loss == "bce":
        inp, target = uniform(shape, 0.02, 0.98, 0), uniform(shape, 0.0, 1.0, 1)
    elif loss == "bce_logits":
        inp, target = randn(shape, 0, scale=2.0), uniform(shape, 0.0, 1.0, 1)
    else:
        inp, target = -uniform(shape, 0.01, 5.0, 0), labels(n, c)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        fn = {"mse": F.mse_loss, "bce": F.binary_cross_entropy,
              "bce_logits": F.binary_cross_entropy_with_logits, "nll": F.nll_loss}[loss]
        xt = tensor(t, inp, True)
        tt = t.from_numpy(target)

        def forward():
            with t.no_grad():
                fn(xt, tt)

        def backward():
            t.autograd.grad(fn(xt, tt), xt)
        return Case({"forward": forward, "backward": backward}, calls)
    name = f"{loss}_forward"
    fn = getattr(ops(impl, name), name)
    return Case({"forward": lambda: fn(inp, target, MEAN, False),
                 "backward": lambda: fn(inp, target, MEAN, True)}, calls)


class Losses(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"loss": LOSSES}


@speedup_row("MSE 128x512: numba speed-up over numpy (loss, loss+grad)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
