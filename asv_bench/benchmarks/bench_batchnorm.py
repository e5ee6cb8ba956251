"""kernels/batchnorm.py: BatchNorm with the ReLU fused in: training forward (batch statistics,
running-statistics update), eval forward, and the fused backward (dx, dgamma, dbeta).

(N, C) is BatchNorm1d, (N, C, H, W) BatchNorm2d. torch: F.relu(F.batch_norm(...)) under no_grad;
backward is autograd.grad for (x, gamma, beta) of the training forward.
"""
from kernels.activations import RELU

from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row,
                     tensor, torch)

NAMES = ("batchnorm_train_forward", "batchnorm_eval_forward", "batchnorm_backward")
_SHAPES = [(64, 128), (128, 512), (128, 32, 14, 14), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
TRAINING = [("batchnorm1d+relu", ((128, 512),)), ("batchnorm2d+relu", ((128, 32, 14, 14),))]
MOMENTUM, EPS = 0.1, 1e-5


def make(impl, shape):
    c = shape[1]
    x = randn(shape, 0, scale=2.0) + 0.5
    g = randn(shape, 1)
    gamma = 1 + randn((c,), 2, scale=0.1)
    beta = randn((c,), 3, scale=0.1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        xt, gt_, bt = (tensor(t, a, True) for a in (x, gamma, beta))
        rm, rv = t.zeros(c), t.ones(c)
        gradt = tensor(t, g)

        def train_forward():
            with t.no_grad():
                F.relu(F.batch_norm(xt, rm, rv, gt_, bt, True, MOMENTUM, EPS))

        def eval_forward():
            with t.no_grad():
                F.relu(F.batch_norm(xt, rm, rv, gt_, bt, False, MOMENTUM, EPS))
        yt = F.relu(F.batch_norm(xt, rm, rv, gt_, bt, True, MOMENTUM, EPS))

        def backward():
            t.autograd.grad(yt, (xt, gt_, bt), gradt, retain_graph=True)
        return Case({"forward": train_forward, "eval_forward": eval_forward,
                     "backward": backward}, calls)
    k = ops(impl, *NAMES)
    rm, rv = gamma * 0, gamma * 0 + 1
    y, mean, invstd = k.batchnorm_train_forward(x, gamma, beta, rm, rv, MOMENTUM, EPS, RELU, 0.0)
    dgamma, dbeta = gamma * 0, beta * 0
    return Case({
        "forward": lambda: k.batchnorm_train_forward(x, gamma, beta, rm, rv, MOMENTUM, EPS,
                                                     RELU, 0.0),
        "eval_forward": lambda: k.batchnorm_eval_forward(x, gamma, beta, rm, rv, EPS, RELU, 0.0),
        "backward": lambda: k.batchnorm_backward(g, x, y, gamma, mean, invstd, RELU, 0.0, True,
                                                 dgamma, dbeta, True),
    }, calls)


def make_train(impl, shape):
    """The training pair only (forward + backward), for the speed-up and ratio figures."""
    c = make(impl, shape)
    return Case({k: v for k, v in c.fns.items() if k != "eval_forward"}, c.number)


class BatchNorm(Family):
    make = staticmethod(make)
    shapes = SHAPES
    timed = ("forward", "eval_forward", "backward")


@speedup_row("batchnorm1d+relu 128x512: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make_train, *TRAINING[0][1])
