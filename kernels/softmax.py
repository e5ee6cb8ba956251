"""Softmax, log-softmax, and cross-entropy fused with its gradient.

    x, y, grad (N, C): softmax over the last axis, one row per sample.

softmax:      y = exp(x - max) / sum(exp(x - max))      (shifting by the row max keeps exp <= 1, so
                                                         inputs of magnitude 1e4 are fine)
   backward:  dx = y * (g - sum(g * y))                 (the Jacobian-vector product, no C x C matrix)
log_softmax:  y = x - max - log(sum(exp(x - max)))
   backward:  dx = g - exp(y) * sum(g)

cross-entropy on logits, one pass per row giving loss and gradient together:
   labels t (N,) int64:        loss_n = lse_n - x[n, t_n]               dx = softmax - onehot(t)
   probabilities t (N, C):     loss_n = sum_c t_c (lse_n - x_c)         dx = softmax * sum(t) - t
   reduction: MEAN divides loss and gradient by N, SUM does not. Accumulation in float64.
"""
import numpy as np
from numba import njit, prange

from kernels._registry import OPTIONS, compiled, kernel, register

SUM, MEAN = 0, 1


# ----------------------------------------------------------------------------------------- NumPy twins

def _log_sum_exp_np(x):
    m = x.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def softmax_forward_np(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward_np(grad, y):
    return y * (grad - (grad * y).sum(axis=1, keepdims=True))


def log_softmax_forward_np(x):
    return x - _log_sum_exp_np(x)


def log_softmax_backward_np(grad, y):
    return grad - np.exp(y) * grad.sum(axis=1, keepdims=True)


def cross_entropy_forward_np(x, labels, reduction, need_grad):
    n = x.shape[0]
    lse = _log_sum_exp_np(x.astype(np.float64))[:, 0]
    loss = (lse - x[np.arange(n), labels]).sum()
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    if not need_grad:
        return loss * scale, None
    g = softmax_forward_np(x)
    g[np.arange(n), labels] -= 1
    return loss * scale, (g * x.dtype.type(scale)).astype(x.dtype)


def cross_entropy_probs_forward_np(x, t, reduction, need_grad):
    n = x.shape[0]
    logp = log_softmax_forward_np(x.astype(np.float64))
    loss = -(t * logp).sum()
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    if not need_grad:
        return loss * scale, None
    g = np.exp(logp) * t.sum(axis=1, keepdims=True) - t
    return loss * scale, (g * scale).astype(x.dtype)


# ---------------------------------------------------------------------------------------- Numba kernels
# Every kernel runs one row per thread (prange over n): each thread owns row n of its outputs.

@njit(**OPTIONS)
def _exp_shifted(row, out):
    # out[c] = exp(row[c] - max(row)); returns (max, sum of out in float64). Serial: called per row
    # from inside the row-parallel kernels below.
    m = row[0]
    for c in range(row.size):
        m = max(m, row[c])
    s = 0.0
    for c in range(row.size):
        e = np.exp(row[c] - m)
        out[c] = e
        s += e
    return m, s


@kernel(softmax_forward_np, parallel_min=1 << 13)
def softmax_forward(x):
    y = np.empty_like(x)
    for n in prange(x.shape[0]):
        out = y[n]
        _, s = _exp_shifted(x[n], out)
        inv = x.dtype.type(1 / s)
        for c in range(out.size):
            out[c] *= inv
    return y


@kernel(softmax_backward_np, parallel_min=1 << 15)
def softmax_backward(grad, y):
    dx = np.empty_like(grad)
    for n in prange(grad.shape[0]):
        g, yr, out = grad[n], y[n], dx[n]
        dot = grad.dtype.type(0)
        for c in range(g.size):
            dot += g[c] * yr[c]
        for c in range(g.size):
            out[c] = yr[c] * (g[c] - dot)
    return dx


@kernel(log_softmax_forward_np, parallel_min=1 << 13)
def log_softmax_forward(x):
    y = np.empty_like(x)
    for n in prange(x.shape[0]):
        row, out = x[n], y[n]
        m, s = _exp_shifted(row, out)
        shift = x.dtype.type(m + np.log(s))
        for c in range(row.size):
            out[c] = row[c] - shift
    return y


@kernel(log_softmax_backward_np, parallel_min=1 << 13)
def log_softmax_backward(grad, y):
    dx = np.empty_like(grad)
    for n in prange(grad.shape[0]):
        g, yr, out = grad[n], y[n], dx[n]
        s = grad.dtype.type(0)
        for c in range(g.size):
            s += g[c]
        for c in range(g.size):
            out[c] = g[c] - np.exp(yr[c]) * s
    return dx


@compiled(parallel_min=1 << 13)
def _ce_rows(x, labels, t, use_labels, scale, need_grad, losses, g):
    # x, g: (N, C); labels (N,) or t (N, C); losses (N,) float64. Thread owns row n of g and losses[n].
    for n in prange(x.shape[0]):
        row = x[n]
        # The exponentials go straight into the gradient row (or a scratch row) and are scaled there.
        out = g[n] if need_grad else np.empty(row.size, x.dtype)
        m, s = _exp_shifted(row, out)
        lse = m + np.log(s)
        if use_labels:
            losses[n] = lse - row[labels[n]]
            if need_grad:
                inv = x.dtype.type(scale / s)
                for c in range(row.size):
                    out[c] *= inv
                out[labels[n]] -= x.dtype.type(scale)
        else:
            tr = t[n]
            acc = 0.0
            tsum = 0.0
            for c in range(row.size):
                acc += tr[c] * (lse - row[c])
                tsum += tr[c]
            losses[n] = acc
            if need_grad:
                inv = x.dtype.type(scale * tsum / s)
                sc = x.dtype.type(scale)
                for c in range(row.size):
                    out[c] = out[c] * inv - sc * tr[c]


def _cross_entropy(x, labels, t, use_labels, reduction, need_grad):
    n = x.shape[0]
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    losses = np.empty(n, np.float64)
    g = np.empty_like(x) if need_grad else np.empty((0, 0), x.dtype)
    _ce_rows(x, labels, t, use_labels, scale, need_grad, losses, g)
    return losses.sum() * scale, (g if need_grad else None)


def cross_entropy_forward(x, labels, reduction, need_grad):
    return _cross_entropy(x, labels, np.empty((0, 0), x.dtype), True, reduction, need_grad)


def cross_entropy_probs_forward(x, t, reduction, need_grad):
    return _cross_entropy(x, np.empty(0, np.int64), t, False, reduction, need_grad)


register("cross_entropy_forward", cross_entropy_forward, cross_entropy_forward_np)
register("cross_entropy_probs_forward", cross_entropy_probs_forward, cross_entropy_probs_forward_np)
