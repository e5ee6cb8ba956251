"""kernels/clip.py: gradient clipping over all of a model's gradients in one call, as
fastlayers.clip_grad_norm_ (grad_norm, then scale) and clip_grad_value_ (clip_value) run it: a
tuple of each parameter's flat gradient, at the speed-run models' parameter shapes.

grad_norm is the 2-norm; scale multiplies by -1 (exact, so repeated calls neither drift nor reach
subnormals); clip_value clamps to +-0.01 (the gradients' standard deviation; from the second call
on, the values are within the bounds, about a third of them on a bound).

torch: torch.nn.utils.get_total_norm; torch._foreach_mul_ (the op clip_grads_with_norm_ scales
with, which has no public form taking a given factor); torch.nn.utils.clip_grad_value_ over the
parameters' .grad tensors.
"""
import math

from .bench_optim import MODELS as PARAMETER_SHAPES
from .common import Case, Family, calls_for, ops, randn, speedup, speedup_row, torch

MODELS = ["mlp", "mlp_bn", "cnn"]
SIZES = {f"{m} ({sum(math.prod(s) for s in PARAMETER_SHAPES[m]):,})": m for m in MODELS}
NORM, FACTOR, VALUE = 2.0, -1.0, 0.01
OPS = ("grad_norm", "scale", "clip_value")


def make(impl, model):
    shapes = PARAMETER_SHAPES[model]
    calls = calls_for(sum(math.prod(s) for s in shapes), 16)
    # clip_value gets gradients of its own: scale's keep their magnitudes, clip_value's lose them
    # at the first call.
    grads = [randn(s, 100 + i, scale=0.01).reshape(-1).copy() for i, s in enumerate(shapes)]
    clipped = [g.copy() for g in grads]
    if impl == "torch":
        t = torch()
        grads = [t.from_numpy(g) for g in grads]
        params = []
        for g in clipped:
            p = t.zeros(g.shape, requires_grad=True)
            p.grad = t.from_numpy(g)
            params.append(p)
        return Case({
            "grad_norm": lambda: t.nn.utils.get_total_norm(grads, NORM),
            "scale": lambda: t._foreach_mul_(grads, FACTOR),
            "clip_value": lambda: t.nn.utils.clip_grad_value_(params, VALUE),
        }, calls)
    k = ops(impl, *OPS)
    grads, clipped = tuple(grads), tuple(clipped)
    return Case({"grad_norm": lambda: k.grad_norm(grads, NORM),
                 "scale": lambda: k.scale(grads, FACTOR),
                 "clip_value": lambda: k.clip_value(clipped, VALUE)}, calls)


def make_clip_norm(impl, model):
    """clip_grad_norm_'s two calls: the norm, then the scaling."""
    c = make(impl, model)
    return Case({k: c.fns[k] for k in ("grad_norm", "scale")}, c.number)


def make_clip_value(impl, model):
    """clip_grad_value_'s one call."""
    c = make(impl, model)
    return Case({"clip_value": c.fns["clip_value"]}, c.number)


TRAINING = [("clip_grad_norm_ (mlp_bn): grad_norm + scale", ("mlp_bn",), make_clip_norm),
            ("clip_grad_value_ (mlp_bn)", ("mlp_bn",), make_clip_value)]


class GradClip(Family):
    make = staticmethod(make)
    shape_name = "parameters"
    shapes = SIZES
    timed = OPS


@speedup_row("clip_grad_norm_ (mlp_bn, 569k parameters: grad_norm + scale): numba speed-up over "
             "numpy")
def track_numba_speedup():
    return speedup(make_clip_norm, *TRAINING[0][1])
