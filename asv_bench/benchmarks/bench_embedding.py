"""kernels/embedding.py: Embedding lookup (gather) and its backward (scatter-add into the weight
gradient, owned by weight rows).

Shape (V, D, B, S): a V x D table looked up at B sequences of S tokens. The backward adds into an
existing weight gradient; torch: F.embedding under no_grad, and autograd.grad for the weight, which
also allocates and zeroes the (V, D) gradient it returns.
"""
from .common import (Case, Family, calls_for, labels, ops, randn, shape_labels, speedup,
                     speedup_row, tensor, torch)

# A small vocabulary, and a 10k-word vocabulary of width 256 at 64 sequences of 128 tokens.
_SHAPES = [(1000, 64, 32, 16), (10000, 256, 64, 128)]
SHAPES = shape_labels(_SHAPES)
TRAINING = [("embedding", ((10000, 256, 64, 128),))]


def make(impl, shape):
    v, d, b, s = shape
    w = randn((v, d), 0)
    idx = labels(b * s, v, seed=1)
    g = randn((b * s, d), 2)
    calls = calls_for(b * s * d)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        wt = tensor(t, w, True)
        it = t.from_numpy(idx.reshape(b, s))
        gt = tensor(t, g.reshape(b, s, d))

        def forward():
            with t.no_grad():
                F.embedding(it, wt)
        yt = F.embedding(it, wt)
        return Case({"forward": forward,
                     "backward": lambda: t.autograd.grad(yt, wt, gt, retain_graph=True)}, calls)
    k = ops(impl, "embedding_forward", "embedding_backward")
    dw = w * 0
    return Case({"forward": lambda: k.embedding_forward(w, idx),
                 "backward": lambda: k.embedding_backward(g, idx, -1, dw)}, calls)


class Embedding(Family):
    make = staticmethod(make)
    shapes = SHAPES


@speedup_row("embedding 10000x256 at 64x128 tokens: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
