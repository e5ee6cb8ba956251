"""kernels/activations.py: elementwise activation forward and backward (from the output y).

torch: F.relu / torch.sigmoid / torch.tanh under no_grad; backward is autograd.grad for x.
"""
import math

from kernels.activations import RELU, SIGMOID, TANH

from .common import IMPLS, Case, calls_for, case, label, ops, randn, speedup, tensor, torch

_SHAPES = [(64, 128), (128, 512), (128, 32, 14, 14), (4096, 1024)]
SHAPES = {label(s, calls_for(math.prod(s))): s for s in _SHAPES}
ACTS = {"relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}
TRAINING = [("relu", ((128, 512), "relu")), ("sigmoid", ((128, 512), "sigmoid"))]


def make(impl, shape, act):
    x = randn(shape, 0)
    g = randn(shape, 1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        fn = {"relu": t.nn.functional.relu, "sigmoid": t.sigmoid, "tanh": t.tanh}[act]
        xt = tensor(t, x, True)
        gt = tensor(t, g)

        def forward():
            with t.no_grad():
                fn(xt)
        yt = fn(xt)

        def backward():
            t.autograd.grad(yt, xt, gt, retain_graph=True)
        return Case({"forward": forward, "backward": backward}, calls)
    k = ops(impl, "activation_forward", "activation_backward")
    code = ACTS[act]
    y = k.activation_forward(x, code, 0.0)
    return Case({"forward": lambda: k.activation_forward(x, code, 0.0),
                 "backward": lambda: k.activation_backward(g, y, code, 0.0)}, calls)


class Activations:
    params = [IMPLS, list(SHAPES), list(ACTS)]
    param_names = ["impl", "shape", "activation"]
    timeout = 120

    def setup(self, impl, shape, act):
        self.case = case(make, impl, SHAPES[shape], act)

    def time_forward(self, impl, shape, act):
        self.case.run("forward")

    def time_backward(self, impl, shape, act):
        self.case.run("backward")


def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


track_numba_speedup.unit = "x"
track_numba_speedup.pretty_name = "relu 128x512: numba speed-up over numpy (fwd+bwd)"
track_numba_speedup.timeout = 120
