"""kernels/layernorm.py: LayerNorm over the last dimension, forward and fused backward (dx,
dweight, dbias).

(rows, D): a transformer's activations, batch x sequence rows of D features. torch:
F.layer_norm under no_grad; backward is autograd.grad for (x, weight, bias).
"""
from .common import (Case, Family, calls_for, ops, randn, shape_labels, speedup, speedup_row, torch,
                     torch_case)

# 64 sequences of 128 tokens at widths 256 and 768 (BERT-base), and one small batch.
_SHAPES = [(128, 256), (64 * 128, 256), (16 * 128, 768)]
SHAPES = shape_labels(_SHAPES)
TRAINING = [("layernorm", ((64 * 128, 256),))]
EPS = 1e-5


def make(impl, shape):
    d = shape[1]
    x = randn(shape, 0, scale=2.0) + 0.5
    g = randn(shape, 1)
    w = 1 + randn((d,), 2, scale=0.1)
    b = randn((d,), 3, scale=0.1)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        return torch_case(t, lambda xt, wt, bt: t.nn.functional.layer_norm(xt, (d,), wt, bt, EPS),
                          [x, w, b], g, calls)
    k = ops(impl, "layernorm_forward", "layernorm_backward")
    y, mean, rstd = k.layernorm_forward(x, w, b, EPS)
    dw, db = w * 0, b * 0
    return Case({"forward": lambda: k.layernorm_forward(x, w, b, EPS),
                 "backward": lambda: k.layernorm_backward(g, x, w, mean, rstd, dw, db, True)},
                calls)


class LayerNorm(Family):
    make = staticmethod(make)
    shapes = SHAPES


@speedup_row("layernorm 8192x256: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
