"""Losses fused with their gradient: one pass gives the loss and, if asked, d(loss)/d(input).

    p, t, x, g, w, pw: (n,) flat views of any shape (all of one shape); for nll, logp (N, C) or
    (N, C, S) with labels (N,) or (N, S) int64 and class weights w (C,).
    reduction: MEAN divides by the element count (nll: by the summed weights of the targets not
    ignored; NaN over none), SUM does not, NONE returns the per-element losses (in the input's
    dtype) and the unscaled gradient.

mse:          l = d^2 (d = p - t)                               g = 2 d
l1:           l = |d|                                           g = sign(d)  (0 at d = 0)
huber:        l = d^2 / 2 if |d| < delta else delta (|d| - delta / 2)    g = clip(d, -delta, delta)
smooth_l1:    huber with delta = beta, divided by beta (beta = 0: l1), as PyTorch
bce:          l = -(t log p + (1 - t) log(1 - p)), logs clamped at -100 (as PyTorch)
              g = (p - t) / max(p (1 - p), 1e-12)
bce_logits:   l = (1 - t) x - lw log sigmoid(x), lw = 1 + (pw - 1) t (pw = 1 without pos_weight)
              g = lw sigmoid(x) - pw t
weight w:     l and g times w (broadcast to the input by the caller); the MEAN still divides by n
nll:          l_n = -w[label_n] logp[n, label_n] (0 where label_n == ignore_index)
              g = -w[label] onehot(label)

Sums are accumulated in float64 over fixed chunks of CHUNK elements (one chunk per thread at a time,
each writing only its own partial sum), then the partials are added in order: the result does not
depend on the thread count. The compiled exp/log/log1p are kernels/_vmath.py's (they vectorise;
Numba's np.exp and np.log are scalar libm calls). mse, l1, huber and bce compute each element in
float64; bce_logits in the input's precision (float32 for float32 inputs, like PyTorch), see below.
"""
import math

import numpy as np
from numba import njit, prange

from kernels import _vmath
from kernels._registry import OPTIONS, compiled, register
from kernels.softmax import MEAN, NONE, SUM  # noqa: F401  (re-exported: the reduction codes)
from kernels.softmax import unit_weights

CHUNK = 4096
MSE, BCE, BCE_LOGITS, L1, HUBER, SMOOTH_L1 = range(6)
_CHEAP = (MSE, L1, HUBER, SMOOTH_L1)     # the kinds without exp or log
# Placeholders for an absent weight (and nll's absent gradient), per dtype: of the real array's
# type, so that one compiled signature serves calls with and without them.
_NO_WEIGHT = {np.dtype(dt): np.empty(0, dt) for dt in (np.float32, np.float64)}
_NO_GRADIENT = {np.dtype(dt): np.empty((0, 0, 0), dt) for dt in (np.float32, np.float64)}
_NO_LOSSES = np.empty((0, 0), np.float64)


# ----------------------------------------------------------------------------------------- NumPy twins

def _pointwise_np(kind, p, t, param, pw):
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    d = p64 - t64
    if kind == MSE:
        return d * d, 2 * d
    if kind == L1:
        return np.abs(d), np.sign(d)
    if kind in (HUBER, SMOOTH_L1):
        div = param if kind == SMOOTH_L1 else 1.0
        quadratic = np.abs(d) < param
        loss = np.where(quadratic, 0.5 * d * d, param * (np.abs(d) - 0.5 * param))
        return loss / div, np.clip(d, -param, param) / div
    if kind == BCE:
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped to -100 as in PyTorch
            logp = np.maximum(np.log(p64), -100)
            log1mp = np.maximum(np.log1p(-p64), -100)
        return -(t64 * logp + (1 - t64) * log1mp), (p64 - t64) / np.maximum(p64 * (1 - p64), 1e-12)
    pw64 = np.ones_like(p64) if pw is None else pw.astype(np.float64)
    lw = 1 + (pw64 - 1) * t64
    log_sigmoid = np.minimum(p64, 0) - np.log1p(np.exp(-np.abs(p64)))
    sig = np.exp(log_sigmoid)
    return (1 - t64) * p64 - lw * log_sigmoid, lw * sig - pw64 * t64


def _reduce_np(kind, p, t, reduction, need_grad, param=0.0, weight=None, pos_weight=None):
    if kind == SMOOTH_L1 and param == 0.0:
        kind = L1
    loss, grad = _pointwise_np(kind, p, t, param, pos_weight)
    if weight is not None:
        loss, grad = loss * weight, grad * weight
    if reduction == NONE:
        return loss.astype(p.dtype), (grad.astype(p.dtype) if need_grad else None)
    scale = 1.0 / p.size if reduction == MEAN and p.size else 1.0
    total = float("nan") if reduction == MEAN and not p.size else loss.sum() * scale
    return total, ((grad * scale).astype(p.dtype) if need_grad else None)


def mse_forward_np(p, t, reduction, need_grad):
    return _reduce_np(MSE, p, t, reduction, need_grad)


def l1_forward_np(p, t, reduction, need_grad):
    return _reduce_np(L1, p, t, reduction, need_grad)


def huber_forward_np(p, t, reduction, need_grad, delta=1.0):
    return _reduce_np(HUBER, p, t, reduction, need_grad, delta)


def smooth_l1_forward_np(p, t, reduction, need_grad, beta=1.0):
    return _reduce_np(SMOOTH_L1, p, t, reduction, need_grad, beta)


def bce_forward_np(p, t, reduction, need_grad, weight=None):
    return _reduce_np(BCE, p, t, reduction, need_grad, weight=weight)


def bce_logits_forward_np(x, t, reduction, need_grad, weight=None, pos_weight=None):
    return _reduce_np(BCE_LOGITS, x, t, reduction, need_grad, weight=weight, pos_weight=pos_weight)


def nll_forward_np(logp, labels, reduction, need_grad, weight=None, ignore_index=-100):
    n, c = logp.shape[:2]
    lp = logp.reshape(n, c, -1) if logp.size else logp.reshape(n, c, 0)
    y = labels.reshape(n, lp.shape[2])
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    keep = y != ignore_index
    yk = np.where(keep, y, 0)
    wy = w[yk] * keep                                                   # (N, S)
    picked = np.take_along_axis(lp, yk[:, None, :], axis=1)[:, 0, :].astype(np.float64)
    losses = -wy * picked
    if reduction == NONE:
        loss, scale = losses.astype(logp.dtype).reshape(labels.shape), 1.0
    else:
        with np.errstate(divide="ignore"):
            scale = np.float64(1.0) / wy.sum() if reduction == MEAN else 1.0
        loss = float(losses.sum()) * float(scale)
    if not need_grad:
        return loss, None
    g = np.zeros(lp.shape)
    with np.errstate(invalid="ignore"):                 # 0 * inf where every target is ignored
        np.put_along_axis(g, yk[:, None, :], (-wy * scale)[:, None, :], axis=1)
    g = np.where(keep[:, None, :], g, 0.0)
    return loss, g.astype(logp.dtype).reshape(logp.shape)


# ---------------------------------------------------------------------------------------- Numba kernels

# One chunk of each kind: a loop that writes every element's loss (into a float64 scratch array)
# and gradient (times scale, into g), with no reduction carried through it so that it vectorises;
# then one _finish_chunk, after the kind's branch (inlined once, not once per kind: it is a third of
# the compile time), applies the weights and sums the losses in float64 (_vmath.sum64). mse, l1,
# huber and bce work in float64. bce_logits works in the input's precision: its exp and log1p are
# the bulk of the work and vectorise twice as wide in float32, and each loss term is within a few
# ulp (written as x (1 - t) or -x pw t, whichever has no cancellation for t in [0, 1], plus
# lw log1p(exp(-|x|)) > 0).

@njit(inline="always", **OPTIONS)
def _finish_chunk(loss, g, w, out, need_grad):
    # loss, g: a chunk's losses and gradient; w: its weights and out: where its per-element losses
    # go (reduction NONE), each empty when absent. Returns the sum of the (weighted) losses.
    if w.size:
        for i in range(loss.size):
            loss[i] *= w[i]
        if need_grad:
            for i in range(loss.size):
                g[i] *= w[i]
    for i in range(out.size):
        out[i] = loss[i]
    return _vmath.sum64(loss)


@njit(inline="always", **OPTIONS)
def _mse_chunk(p, t, scale, g, need_grad, loss):
    # the cheapest kind: without need_grad the loop skips the gradient store (the others are
    # bound by their exp/log or branches and compute theirs into scratch)
    if need_grad:
        for i in range(p.size):
            d = np.float64(p[i]) - np.float64(t[i])
            loss[i] = d * d
            g[i] = 2.0 * d * scale
    else:
        for i in range(p.size):
            d = np.float64(p[i]) - np.float64(t[i])
            loss[i] = d * d


@njit(inline="always", **OPTIONS)
def _l1_chunk(p, t, scale, g, loss):
    for i in range(p.size):
        d = np.float64(p[i]) - np.float64(t[i])
        loss[i] = abs(d)
        g[i] = (scale if d > 0.0 else (-scale if d < 0.0 else 0.0))


@njit(inline="always", **OPTIONS)
def _huber_chunk(p, t, delta, div, scale, g, loss):
    # huber(delta) / div: HuberLoss with div = 1, SmoothL1Loss(beta) with delta = div = beta
    inv = 1.0 / div
    lin = delta * (0.5 * delta)
    for i in range(p.size):
        d = np.float64(p[i]) - np.float64(t[i])
        a = abs(d)
        loss[i] = (0.5 * d * d if a < delta else delta * a - lin) * inv
        g[i] = min(max(d, -delta), delta) * (inv * scale)


@njit(inline="always", **OPTIONS)
def _bce_chunk(p, t, scale, g, loss):
    for i in range(p.size):
        pi, ti = np.float64(p[i]), np.float64(t[i])
        logp = max(_vmath.log(pi), -100.0)
        log1mp = max(_vmath.log1p(-pi), -100.0)
        loss[i] = -(ti * logp + (1.0 - ti) * log1mp)
        g[i] = (pi - ti) / max(pi * (1.0 - pi), 1e-12) * scale


@njit(inline="always", **OPTIONS)
def _bce_logits_chunk(x, t, scale, g, pw, loss):
    # the losses go to scratch in x's dtype, then to loss in float64 in a loop of their own: a
    # float64 store in the main loop halves its vector width (measured 1.7x slower in float32)
    one, zero, sc = x.dtype.type(1), x.dtype.type(0), x.dtype.type(scale)
    lx = np.empty(x.size, x.dtype)
    if pw.size:
        for i in range(x.size):
            xi, ti, pwi = x[i], t[i], pw[i]
            e = _vmath.exp(-abs(xi))
            lw = one + (pwi - one) * ti
            pos = xi >= zero
            lx[i] = (xi * (one - ti) if pos else -xi * pwi * ti) + lw * _vmath.log1p(e)
            g[i] = (lw * (one if pos else e) / (one + e) - pwi * ti) * sc
    else:
        for i in range(x.size):
            xi, ti = x[i], t[i]
            e = _vmath.exp(-abs(xi))
            pos = xi >= zero
            lx[i] = (xi * (one - ti) if pos else -xi * ti) + _vmath.log1p(e)
            g[i] = ((one if pos else e) / (one + e) - ti) * sc
    for i in range(x.size):
        loss[i] = lx[i]


@compiled(parallel_min=1 << 16)
def _pointwise(p, t, kind, param, scale, need_grad, g, partial, w, pw, out):
    # p, t, g, w, pw, out: (n,) (w, pw, out empty when absent; out is filled under NONE);
    # partial: (nchunks,) float64. Thread owns chunk k: g, out[k*CHUNK:(k+1)*CHUNK] and
    # partial[k]. Without need_grad the chunk's gradient goes to scratch. param: huber's delta or
    # smooth_l1's beta (> 0).
    n = p.size
    for k in prange(partial.size):
        lo = k * CHUNK
        hi = min(n, lo + CHUNK)
        gk = g[lo:hi] if need_grad else np.empty(hi - lo, p.dtype)
        loss = np.empty(hi - lo, np.float64)
        pk, tk = p[lo:hi], t[lo:hi]
        if kind == MSE:
            _mse_chunk(pk, tk, scale, gk, need_grad, loss)
        elif kind == L1:
            _l1_chunk(pk, tk, scale, gk, loss)
        elif kind == HUBER or kind == SMOOTH_L1:
            _huber_chunk(pk, tk, param, param if kind == SMOOTH_L1 else 1.0, scale, gk, loss)
        elif kind == BCE:
            _bce_chunk(pk, tk, scale, gk, loss)
        else:
            _bce_logits_chunk(pk, tk, scale, gk, pw[lo:hi], loss)
        partial[k] = _finish_chunk(loss, gk, w[lo:hi], out[lo:hi], need_grad)


def _flat(a, like):
    return _NO_WEIGHT[like.dtype] if a is None else a.reshape(-1)


def _reduce(kind, p, t, reduction, need_grad, param=0.0, weight=None, pos_weight=None):
    if kind == SMOOTH_L1 and param == 0.0:
        kind = L1
    n = p.size
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    partial = np.zeros((n + CHUNK - 1) // CHUNK, np.float64)
    g = np.empty_like(p) if need_grad else np.empty(0, p.dtype)
    out = np.empty_like(p) if reduction == NONE else np.empty(0, p.dtype)
    # mse, l1 and huber have no exp or log: a parallel launch pays only from twice the size (at
    # 131k elements)
    parallel = _pointwise.runs_parallel(n // 2 if kind in _CHEAP else n)
    kern = _pointwise.parallel if parallel else _pointwise.serial
    kern(p.reshape(-1), t.reshape(-1), kind, float(param), scale, need_grad, g.reshape(-1),
         partial, _flat(weight, p), _flat(pos_weight, p), out.reshape(-1))
    if reduction == NONE:
        loss = out
    else:
        loss = float("nan") if reduction == MEAN and not n else float(partial.sum()) * scale
    return loss, (g if need_grad else None)


def mse_forward(p, t, reduction, need_grad):
    return _reduce(MSE, p, t, reduction, need_grad)


def l1_forward(p, t, reduction, need_grad):
    return _reduce(L1, p, t, reduction, need_grad)


def huber_forward(p, t, reduction, need_grad, delta=1.0):
    return _reduce(HUBER, p, t, reduction, need_grad, delta)


def smooth_l1_forward(p, t, reduction, need_grad, beta=1.0):
    return _reduce(SMOOTH_L1, p, t, reduction, need_grad, beta)


def bce_forward(p, t, reduction, need_grad, weight=None):
    return _reduce(BCE, p, t, reduction, need_grad, weight=weight)


def bce_logits_forward(x, t, reduction, need_grad, weight=None, pos_weight=None):
    return _reduce(BCE_LOGITS, x, t, reduction, need_grad, weight=weight, pos_weight=pos_weight)


@compiled(parallel_min=None)
def _nll(logp, labels, w, ignore_index, reduction, need_grad, losses, g):
    # logp, g: (N, C, S); labels: (N, S); w: (C,); losses: (N, S) under NONE (else not written).
    # Serial: N is a batch, the work is N*S loads. Returns the sum of the losses and the gradient's
    # scale (1 / the summed weights of the targets not ignored under MEAN, else 1).
    total = 0.0
    loss = 0.0
    for n in range(logp.shape[0]):
        for s in range(logp.shape[2]):
            y = labels[n, s]
            li = 0.0
            if y != ignore_index:
                li = -np.float64(w[y]) * logp[n, y, s]
                loss += li
                total += w[y]
            if reduction == NONE:
                losses[n, s] = li
    scale = 1.0 / total if reduction == MEAN else 1.0     # inf when every target is ignored
    if need_grad:
        for n in range(logp.shape[0]):
            for s in range(logp.shape[2]):
                y = labels[n, s]
                if y != ignore_index:
                    g[n, y, s] = -w[y] * scale
    return loss, scale


def nll_forward(logp, labels, reduction, need_grad, weight=None, ignore_index=-100):
    n, c = logp.shape[:2]
    s = math.prod(logp.shape[2:])
    w = unit_weights(c, logp.dtype) if weight is None else weight
    losses = np.empty((n, s), np.float64) if reduction == NONE else _NO_LOSSES
    g = np.zeros(logp.shape, logp.dtype) if need_grad else _NO_GRADIENT[logp.dtype]
    total, scale = _nll(logp.reshape(n, c, s), labels.reshape(n, s), w, ignore_index, reduction,
                        need_grad, losses, g.reshape(n, c, s) if need_grad else g)
    if reduction == NONE:
        loss = losses.astype(logp.dtype).reshape(labels.shape)
    else:
        loss = total * scale
    return loss, (g if need_grad else None)


register("mse_forward", mse_forward, mse_forward_np)
register("l1_forward", l1_forward, l1_forward_np)
register("huber_forward", huber_forward, huber_forward_np)
register("smooth_l1_forward", smooth_l1_forward, smooth_l1_forward_np)
register("bce_forward", bce_forward, bce_forward_np)
register("bce_logits_forward", bce_logits_forward, bce_logits_forward_np)
register("nll_forward", nll_forward, nll_forward_np)
