"""kernels/dropout.py: inverted dropout (p = 0.2) with counter-based hashed masks: forward (mask +
scaled copy) and backward (from the uint8 mask).

torch: F.dropout(x, 0.2, training=True) under no_grad; backward is autograd.grad for x.
"""
import math

from .common import IMPLS, Case, calls_for, case, label, ops, randn, speedup, tensor, torch

_SHAPES = [(64, 128), (128, 512), (128, 32, 14, 14), (4096, 1024)]
SHAPES = {label(s, calls_for(math.prod(s))): s for s in _SHAPES}
TRAINING = [("dropout", ((128, 512),))]
P = 0.2


def make(impl, shape):
    x = randn(shape, 0)
    g = randn(shape, 1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        xt = tensor(t, x, True)
        gt = tensor(t, g)

        def forward():
            with t.no_grad():
                F.dropout(xt, P, True)
        yt = F.dropout(xt, P, True)

        def backward():
            t.autograd.grad(yt, xt, gt, retain_graph=True)
        return Case({"forward": forward, "backward": backward}, calls)
    k = ops(impl, "dropout_forward", "dropout_backward")
    _, mask = k.dropout_forward(x, P, 1234, 1)
    return Case({"forward": lambda: k.dropout_forward(x, P, 1234, 1),
                 "backward": lambda: k.dropout_backward(g, mask, P)}, calls)


class Dropout:
    params = [IMPLS, list(SHAPES)]
    param_names = ["impl", "shape"]
    timeout = 120

    def setup(self, impl, shape):
        self.case = case(make, impl, SHAPES[shape])

    def time_forward(self, impl, shape):
        self.case.run("forward")

    def time_backward(self, impl, shape):
        self.case.run("backward")


def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


track_numba_speedup.unit = "x"
track_numba_speedup.pretty_name = "dropout 128x512: numba speed-up over numpy (fwd+bwd)"
track_numba_speedup.timeout = 120
