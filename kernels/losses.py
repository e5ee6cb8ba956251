"""Losses fused with their gradient: one pass gives the loss and, if asked, d(loss)/d(input).

    p, t, x, g: (n,) flat views of any shape (the pair must match); labels (N,) int64 for nll.
    reduction: MEAN divides by the element count (nll: by N), SUM does not.

mse:          l = (p - t)^2                                    g = 2 (p - t)
bce:          l = -(t log p + (1 - t) log(1 - p)), logs clamped at -100 (as PyTorch)
              g = (p - t) / max(p (1 - p), 1e-12)
bce_logits:   l = max(x, 0) - x t + log(1 + exp(-|x|))         g = sigmoid(x) - t
nll:          l_n = -logp[n, label_n]                          g = -onehot(label)

Sums are accumulated in float64 over fixed chunks of CHUNK elements (one chunk per thread at a time,
each writing only its own partial sum), then the partials are added in order: the result does not
depend on the thread count. The compiled exp/log/log1p are kernels/_vmath.py's (they vectorise;
Numba's np.exp and np.log are scalar libm calls). mse and bce compute each element in float64;
bce_logits in the input's precision (float32 for float32 inputs, like PyTorch), see below.
"""
import numpy as np
from numba import njit, prange

from kernels import _vmath
from kernels._registry import compiled, register
from kernels.softmax import MEAN, SUM  # noqa: F401  (re-exported: the reduction codes)

CHUNK = 4096
MSE, BCE, BCE_LOGITS = range(3)


# ----------------------------------------------------------------------------------------- NumPy twins

def _pointwise_np(kind, p, t):
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    if kind == MSE:
        d = p64 - t64
        return d * d, 2 * d
    if kind == BCE:
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped to -100 as in PyTorch
            logp = np.maximum(np.log(p64), -100)
            log1mp = np.maximum(np.log1p(-p64), -100)
        return -(t64 * logp + (1 - t64) * log1mp), (p64 - t64) / np.maximum(p64 * (1 - p64), 1e-12)
    e = np.exp(-np.abs(p64))
    sig = np.where(p64 >= 0, 1 / (1 + e), e / (1 + e))
    return np.maximum(p64, 0) - p64 * t64 + np.log1p(e), sig - t64


def _reduce_np(kind, p, t, reduction, need_grad):
    loss, grad = _pointwise_np(kind, p, t)
    scale = 1.0 / p.size if reduction == MEAN and p.size else 1.0
    return loss.sum() * scale, ((grad * scale).astype(p.dtype) if need_grad else None)


def mse_forward_np(p, t, reduction, need_grad):
    return _reduce_np(MSE, p, t, reduction, need_grad)


def bce_forward_np(p, t, reduction, need_grad):
    return _reduce_np(BCE, p, t, reduction, need_grad)


def bce_logits_forward_np(x, t, reduction, need_grad):
    return _reduce_np(BCE_LOGITS, x, t, reduction, need_grad)


def nll_forward_np(logp, labels, reduction, need_grad):
    n = logp.shape[0]
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    loss = -logp[np.arange(n), labels].astype(np.float64).sum() * scale
    if not need_grad:
        return loss, None
    g = np.zeros_like(logp)
    g[np.arange(n), labels] = -scale
    return loss, g


# ---------------------------------------------------------------------------------------- Numba kernels

# One chunk of each kind: a loop that writes every element's loss (into a scratch array) and
# gradient (times scale, into g), with no reduction carried through it so that it vectorises; then
# the losses summed in float64 (_vmath.sum64). mse and bce work in float64. bce_logits works in the
# input's precision: its exp and log1p are the bulk of the work and vectorise twice as wide in
# float32, and each loss term is within a few ulp (written as x (1 - t) or -x t, whichever has no
# cancellation for t in [0, 1], plus log1p(exp(-|x|)) > 0).

@njit(inline="always", error_model="numpy")
def _mse_chunk(p, t, scale, g, need_grad):
    # the cheapest kind: without need_grad the loop skips the gradient store (the others are
    # bound by their exp/log and compute theirs into scratch)
    loss = np.empty(p.size, np.float64)
    if need_grad:
        for i in range(p.size):
            d = np.float64(p[i]) - np.float64(t[i])
            loss[i] = d * d
            g[i] = 2.0 * d * scale
    else:
        for i in range(p.size):
            d = np.float64(p[i]) - np.float64(t[i])
            loss[i] = d * d
    return _vmath.sum64(loss)


@njit(inline="always", error_model="numpy")
def _bce_chunk(p, t, scale, g):
    loss = np.empty(p.size, np.float64)
    for i in range(p.size):
        pi, ti = np.float64(p[i]), np.float64(t[i])
        logp = max(_vmath.log(pi), -100.0)
        log1mp = max(_vmath.log1p(-pi), -100.0)
        loss[i] = -(ti * logp + (1.0 - ti) * log1mp)
        g[i] = (pi - ti) / max(pi * (1.0 - pi), 1e-12) * scale
    return _vmath.sum64(loss)


@njit(inline="always", error_model="numpy")
def _bce_logits_chunk(x, t, scale, g):
    one, zero, sc = x.dtype.type(1), x.dtype.type(0), x.dtype.type(scale)
    loss = np.empty(x.size, x.dtype)
    for i in range(x.size):
        xi, ti = x[i], t[i]
        e = _vmath.exp(-abs(xi))
        pos = xi >= zero
        loss[i] = (xi * (one - ti) if pos else -xi * ti) + _vmath.log1p(e)
        g[i] = ((one if pos else e) / (one + e) - ti) * sc
    return _vmath.sum64(loss)


@compiled(parallel_min=1 << 16)
def _pointwise(p, t, kind, scale, need_grad, g, partial):
    # p, t, g: (n,); partial: (nchunks,) float64. Thread owns chunk k: g[k*CHUNK:(k+1)*CHUNK] and
    # partial[k]. Without need_grad the chunk's gradient goes to scratch.
    n = p.size
    for k in prange(partial.size):
        lo = k * CHUNK
        hi = min(n, lo + CHUNK)
        gk = g[lo:hi] if need_grad else np.empty(hi - lo, p.dtype)
        if kind == MSE:
            partial[k] = _mse_chunk(p[lo:hi], t[lo:hi], scale, gk, need_grad)
        elif kind == BCE:
            partial[k] = _bce_chunk(p[lo:hi], t[lo:hi], scale, gk)
        else:
            partial[k] = _bce_logits_chunk(p[lo:hi], t[lo:hi], scale, gk)


def _reduce(kind, p, t, reduction, need_grad):
    n = p.size
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    partial = np.zeros((n + CHUNK - 1) // CHUNK, np.float64)
    g = np.empty_like(p) if need_grad else np.empty(0, p.dtype)
    # MSE has no exp or log: a parallel launch pays only from twice the size (at 131k elements)
    parallel = _pointwise.runs_parallel(n // 2 if kind == MSE else n)
    kern = _pointwise.parallel if parallel else _pointwise.serial
    kern(p.reshape(-1), t.reshape(-1), kind, scale, need_grad, g.reshape(-1), partial)
    return partial.sum() * scale, (g if need_grad else None)


def mse_forward(p, t, reduction, need_grad):
    return _reduce(MSE, p, t, reduction, need_grad)


def bce_forward(p, t, reduction, need_grad):
    return _reduce(BCE, p, t, reduction, need_grad)


def bce_logits_forward(x, t, reduction, need_grad):
    return _reduce(BCE_LOGITS, x, t, reduction, need_grad)


@compiled(parallel_min=None)
def _nll(logp, labels, scale, need_grad, g):
    # logp, g: (N, C); labels (N,). Serial: N is a batch, the work is N loads.
    loss = 0.0
    for n in range(logp.shape[0]):
        loss -= logp[n, labels[n]]
        if need_grad:
            g[n, labels[n]] = -scale
    return loss * scale


def nll_forward(logp, labels, reduction, need_grad):
    n = logp.shape[0]
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    g = np.zeros_like(logp) if need_grad else np.empty((0, 0), logp.dtype)
    loss = _nll(logp, labels, scale, need_grad, g)
    return loss, (g if need_grad else None)


register("mse_forward", mse_forward, mse_forward_np)
register("bce_forward", bce_forward, bce_forward_np)
register("bce_logits_forward", bce_logits_forward, bce_logits_forward_np)
register("nll_forward", nll_forward, nll_forward_np)
