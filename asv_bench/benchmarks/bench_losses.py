"""kernels/losses.py and the cross-entropy options of kernels/softmax.py: each loss fused with its
gradient, with PyTorch's options.

forward is the loss alone (need_grad=False); backward is loss *and* gradient (one fused pass here;
torch: the F.*_loss forward + autograd.grad for the input). The ``loss`` axis holds the losses and
their options:

- ``mse``, ``l1``, ``huber`` (delta 1), ``smooth_l1`` (beta 1), ``bce``, ``bce_logits``, ``nll``;
- ``bce_weighted``: BCE with a weight per column, broadcast to the input on every call (as
  BCELoss does); ``bce_logits_pos_weight``: BCE-with-logits with a pos_weight per column;
- ``nll_weighted``: NLL with class weights and a tenth of the targets ignored;
- ``ce_smooth_weighted``: cross-entropy on logits with class weights, a tenth of the targets
  ignored and label smoothing 0.1 (the weighted mean over the targets kept).
"""
import numpy as np

from kernels.losses import MEAN

from .common import (Case, Family, calls_for, labels, ops, randn, shape_labels, speedup,
                     speedup_row, tensor, torch, uniform)

_SHAPES = [(128, 10), (128, 512), (4096, 1024)]
SHAPES = shape_labels(_SHAPES)
LOSSES = ["mse", "l1", "huber", "smooth_l1", "bce", "bce_weighted", "bce_logits",
          "bce_logits_pos_weight", "nll", "nll_weighted", "ce_smooth_weighted"]
TRAINING = [("mse", ((128, 512), "mse")), ("huber", ((128, 512), "huber")),
            ("bce_logits", ((128, 512), "bce_logits")), ("nll", ((128, 10), "nll")),
            ("ce_smooth_weighted", ((128, 10), "ce_smooth_weighted"))]
IGNORE = -100
SMOOTHING = 0.1


def _ignored_labels(n, c):
    """Class labels with every tenth one set to IGNORE (a fresh copy of the cached labels)."""
    y = labels(n, c).copy()
    y[::10] = IGNORE
    return y


def inputs(shape, loss):
    """(input, target, weight or None, pos_weight or None) of one loss at one shape."""
    n, c = shape
    w = uniform((c,), 0.5, 2.0, 2)
    if loss in ("mse", "l1", "huber", "smooth_l1"):
        return randn(shape, 0), randn(shape, 1), None, None
    if loss in ("bce", "bce_weighted"):
        return (uniform(shape, 0.02, 0.98, 0), uniform(shape, 0.0, 1.0, 1),
                w if loss == "bce_weighted" else None, None)
    if loss in ("bce_logits", "bce_logits_pos_weight"):
        return (randn(shape, 0, scale=2.0), uniform(shape, 0.0, 1.0, 1), None,
                w if loss == "bce_logits_pos_weight" else None)
    if loss == "nll":
        return -uniform(shape, 0.01, 5.0, 0), labels(n, c), None, None
    if loss == "nll_weighted":
        return -uniform(shape, 0.01, 5.0, 0), _ignored_labels(n, c), w, None
    return randn(shape, 0, scale=3.0), _ignored_labels(n, c), w, None


def _torch_fn(t, loss, w, pw):
    F = t.nn.functional
    wt = None if w is None else t.from_numpy(w)
    pwt = None if pw is None else t.from_numpy(pw)
    return {
        "mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss, "smooth_l1": F.smooth_l1_loss,
        "bce": F.binary_cross_entropy, "bce_logits": F.binary_cross_entropy_with_logits,
        "nll": F.nll_loss,
        "bce_weighted": lambda x, y: F.binary_cross_entropy(x, y, weight=wt),
        "bce_logits_pos_weight": lambda x, y: F.binary_cross_entropy_with_logits(
            x, y, pos_weight=pwt),
        "nll_weighted": lambda x, y: F.nll_loss(x, y, weight=wt, ignore_index=IGNORE),
        "ce_smooth_weighted": lambda x, y: F.cross_entropy(x, y, weight=wt, ignore_index=IGNORE,
                                                           label_smoothing=SMOOTHING),
    }[loss]


def _kernel_fn(impl, loss, inp, w, pw):
    """fn(need_grad) calling the kernel as the loss module does (weights broadcast per call)."""
    k = ops(impl, "cross_entropy_forward", "nll_forward", "huber_forward")
    if loss == "ce_smooth_weighted":
        return lambda y, need: k.cross_entropy_forward(inp, y, MEAN, need, w, IGNORE, SMOOTHING)
    if loss == "nll_weighted":
        return lambda y, need: k.nll_forward(inp, y, MEAN, need, w, IGNORE)
    if loss == "bce_weighted":
        return lambda y, need: k.bce_forward(
            inp, y, MEAN, need, np.ascontiguousarray(np.broadcast_to(w, inp.shape)))
    if loss == "bce_logits_pos_weight":
        return lambda y, need: k.bce_logits_forward(
            inp, y, MEAN, need, None, np.ascontiguousarray(np.broadcast_to(pw, inp.shape)))
    fn = getattr(k, f"{loss}_forward")
    return lambda y, need: fn(inp, y, MEAN, need)


def make(impl, shape, loss):
    calls = calls_for(shape[0] * shape[1])
    inp, target, w, pw = inputs(shape, loss)
    if impl == "torch":
        t = torch()
        fn = _torch_fn(t, loss, w, pw)
        xt = tensor(t, inp, True)
        tt = t.from_numpy(target)

        def forward():
            with t.no_grad():
                fn(xt, tt)

        def backward():
            t.autograd.grad(fn(xt, tt), xt)
        return Case({"forward": forward, "backward": backward}, calls)
    fn = _kernel_fn(impl, loss, inp, w, pw)
    return Case({"forward": lambda: fn(target, False), "backward": lambda: fn(target, True)},
                calls)


class Losses(Family):
    make = staticmethod(make)
    shapes = SHAPES
    axes = {"loss": LOSSES}


@speedup_row("MSE 128x512: numba speed-up over numpy (loss, loss+grad)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


@speedup_row("Huber 128x512: numba speed-up over numpy (loss, loss+grad)")
def track_numba_speedup_huber():
    return speedup(make, *TRAINING[1][1])


@speedup_row("cross-entropy 128x10, class weights, ignore_index, label smoothing 0.1: numba "
             "speed-up over numpy (loss, loss+grad)")
def track_numba_speedup_ce_smooth_weighted():
    return speedup(make, *TRAINING[4][1])
