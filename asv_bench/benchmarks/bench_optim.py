"""kernels/optim.py: one in-place optimizer step over a model's parameters.

numba/numpy step fastlayers' optimizer (``fastlayers.optim``) on that backend: one kernel call per
parameter array, as a training step runs it. ``packed`` runs the compiled kernel once over one flat
buffer holding every parameter: the packed design the optimizers do not use, kept here as the
yardstick of what per-parameter calls cost. torch steps torch.optim's optimizer over the model's
parameter tensors, as a torch user would (its default implementation on CPU). The "4M flat" case
is one tensor for everyone.
"""
import math

import numpy as np

from .common import Case, Family, IMPLS, calls_for, ops, randn, speedup, speedup_row, torch

# Parameter tensor shapes of the three speed-run models (Linear weight (out, in) + bias,
# BatchNorm weight + bias, Conv2d weight + bias), and one large flat buffer.
MODELS = {
    "mlp": [(128, 784), (128,), (10, 128), (10,)],
    "mlp_bn": [(512, 784), (512,), (512,), (512,), (256, 512), (256,), (256,), (256,),
               (128, 256), (128,), (128,), (128,), (10, 128), (10,)],
    "cnn": [(16, 1, 3, 3), (16,), (16,), (16,), (32, 16, 3, 3), (32,), (32,), (32,), (10, 1568),
            (10,)],
    "4M flat": [(4096, 1024)],
}


def _size_label(name):
    total = sum(math.prod(s) for s in MODELS[name])
    return f"{name} ({total:,})"


SIZES = {_size_label(name): name for name in MODELS}
OPTIMIZERS = ["sgd", "adam", "rmsprop", "nadam"]

TRAINING = [("sgd momentum (mlp)", ("mlp", "sgd")), ("adam (mlp_bn)", ("mlp_bn", "adam"))]
LR, MOMENTUM, B1, B2, EPS, ALPHA = 0.01, 0.9, 0.9, 0.999, 1e-8, 0.99
# fastlayers' optimizer classes with the hyperparameters the packed kernels get
FL_CLASS = {"sgd": ("SGD", dict(lr=LR, momentum=MOMENTUM)), "adam": ("Adam", dict(lr=1e-3)),
            "rmsprop": ("RMSprop", dict(lr=1e-3)), "nadam": ("NAdam", dict(lr=2e-3))}


def make(impl, model, opt):
    shapes = MODELS[model]
    total = sum(math.prod(s) for s in shapes)
    calls = calls_for(total, 16)
    if impl == "torch":
        t = torch()
        params = []
        for i, s in enumerate(shapes):
            p = t.from_numpy(randn(s, 10 + i, scale=0.1).copy()).requires_grad_(True)
            p.grad = t.from_numpy(randn(s, 100 + i, scale=0.01).copy())
            params.append(p)
        o = {"sgd": lambda: t.optim.SGD(params, lr=LR, momentum=MOMENTUM),
             "adam": lambda: t.optim.Adam(params, lr=1e-3),
             "rmsprop": lambda: t.optim.RMSprop(params, lr=1e-3),
             "nadam": lambda: t.optim.NAdam(params, lr=2e-3)}[opt]()
        return Case({"step": o.step}, calls)
    if impl != "packed":
        import fastlayers as fl
        params = []
        for i, s in enumerate(shapes):
            p = fl.Parameter(randn(s, 10 + i, scale=0.1).copy())
            p.grad = randn(s, 100 + i, scale=0.01).copy()
            params.append(p)
        name, kw = FL_CLASS[opt]
        o = getattr(fl, name)(params, **kw)

        def run():
            with fl.use_backend(impl):
                o.step()
        return Case({"step": run}, calls)
    k = ops("numba", f"{opt}_step")
    p = randn((total,), 10, scale=0.1).copy()
    g = randn((total,), 11, scale=0.01)
    m, v = np.zeros_like(p), np.zeros_like(p)
    empty = np.empty(0, p.dtype)
    step = {
        "sgd": lambda: k.sgd_step(p, g, m, LR, MOMENTUM, 0.0, 0.0, False, False),
        "adam": lambda: k.adam_step(p, g, m, v, empty, 1e-3, B1, B2, EPS, 0.0, 10, False),
        "rmsprop": lambda: k.rmsprop_step(p, g, v, empty, empty, 1e-3, ALPHA, EPS, 0.0, 0.0,
                                          False),
        "nadam": lambda: k.nadam_step(p, g, m, v, B1, B2, EPS, 0.0, 1 - B2 ** 10, 1e-4, 1e-3),
    }[opt]
    return Case({"step": step}, calls)


class Optimizer(Family):
    make = staticmethod(make)
    impls = IMPLS + ["packed"]
    shape_name = "parameters"
    shapes = SIZES
    axes = {"optimizer": OPTIMIZERS}
    timed = ("step",)


@speedup_row("adam step (mlp_bn, 569k parameters): numba speed-up over numpy")
def track_numba_speedup():
    return speedup(make, *TRAINING[1][1])
