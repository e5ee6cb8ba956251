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

The elementwise exponentials are kernels/_vmath.py's exp, in a loop of their own so that it
vectorises (Numba's np.exp is a scalar libm call); the one log per row stays np.log.
"""
import numpy as np
from numba import njit, prange

from kernels import _vmath
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
# The kernels with exps run blocks of ROWS rows per thread (prange over the blocks, each thread owns
# rows [b*ROWS, (b+1)*ROWS) of its outputs); softmax_backward, with no exp, runs one row per thread.
ROWS = 32


@njit(inline="always", **OPTIONS)
def _exp_shifted(x, out, m, s):
    # x, out: (R, C), a block of rows; m: (R,) in x's dtype; s: (R,) float64. Writes m[r] = max(x[r]),
    # out[r, c] = exp(x[r, c] - m[r]) and s[r] = sum(out[r]). Serial: called per block from inside
    # the block-parallel kernels below. Three passes: max and shift per row; exp over the whole block
    # (one long vectorised loop, however short the rows: at 10 classes a loop per row would leave
    # most exps to the scalar remainder); sum per row.
    for r in range(x.shape[0]):
        row, o = x[r], out[r]
        mr = row[0]
        for c in range(row.size):
            mr = max(mr, row[c])
        for c in range(row.size):
            o[c] = row[c] - mr
        m[r] = mr
    flat = out.reshape(-1)
    for i in range(flat.size):
        flat[i] = _vmath.exp(flat[i])
    for r in range(x.shape[0]):
        s[r] = _vmath.sum64(out[r])


@kernel(softmax_forward_np, parallel_min=1 << 13)
def softmax_forward(x):
    n = x.shape[0]
    y = np.empty_like(x)
    m, s = np.empty(n, x.dtype), np.empty(n, np.float64)
    for b in prange((n + ROWS - 1) // ROWS):
        r0, r1 = b * ROWS, min(n, (b + 1) * ROWS)
        _exp_shifted(x[r0:r1], y[r0:r1], m[r0:r1], s[r0:r1])
        for r in range(r0, r1):
            out = y[r]
            inv = x.dtype.type(1 / s[r])
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
    n = x.shape[0]
    y = np.empty_like(x)
    m, s = np.empty(n, x.dtype), np.empty(n, np.float64)
    for b in prange((n + ROWS - 1) // ROWS):
        r0, r1 = b * ROWS, min(n, (b + 1) * ROWS)
        _exp_shifted(x[r0:r1], y[r0:r1], m[r0:r1], s[r0:r1])
        for r in range(r0, r1):
            row, out = x[r], y[r]
            shift = x.dtype.type(m[r] + np.log(s[r]))
            for c in range(row.size):
                out[c] = row[c] - shift
    return y


@kernel(log_softmax_backward_np, parallel_min=1 << 13)
def log_softmax_backward(grad, y):
    n = grad.shape[0]
    dx = np.empty_like(grad)
    for b in prange((n + ROWS - 1) // ROWS):
        r0, r1 = b * ROWS, min(n, (b + 1) * ROWS)
        yb, db = y[r0:r1].reshape(-1), dx[r0:r1].reshape(-1)
        for i in range(yb.size):                    # exp(y) over the whole block, as in _exp_shifted
            db[i] = _vmath.exp(yb[i])
        for r in range(r0, r1):
            g, out = grad[r], dx[r]
            s = grad.dtype.type(_vmath.sum64(g))
            for c in range(g.size):
                out[c] = g[c] - out[c] * s
    return dx


@compiled(parallel_min=1 << 13)
def _ce_rows(x, labels, t, use_labels, scale, need_grad, losses, g):
    # x, g: (N, C); labels (N,) or t (N, C); losses (N,) float64. Thread owns a block of rows of g and
    # losses. The exponentials go straight into the gradient rows and are scaled there; without
    # need_grad, g is scratch (one allocation per call, not one per row).
    n = x.shape[0]
    m, s = np.empty(n, x.dtype), np.empty(n, np.float64)
    for b in prange((n + ROWS - 1) // ROWS):
        r0, r1 = b * ROWS, min(n, (b + 1) * ROWS)
        _exp_shifted(x[r0:r1], g[r0:r1], m[r0:r1], s[r0:r1])
        for r in range(r0, r1):
            row, out = x[r], g[r]
            lse = m[r] + np.log(s[r])
            if use_labels:
                losses[r] = lse - row[labels[r]]
                if need_grad:
                    inv = x.dtype.type(scale / s[r])
                    for c in range(row.size):
                        out[c] *= inv
                    out[labels[r]] -= x.dtype.type(scale)
            else:
                tr = t[r]
                acc = 0.0
                tsum = 0.0
                for c in range(row.size):
                    acc += tr[c] * (lse - row[c])
                    tsum += tr[c]
                losses[r] = acc
                if need_grad:
                    inv = x.dtype.type(scale * tsum / s[r])
                    sc = x.dtype.type(scale)
                    for c in range(row.size):
                        out[c] = out[c] * inv - sc * tr[c]


def _cross_entropy(x, labels, t, use_labels, reduction, need_grad):
    n = x.shape[0]
    scale = 1.0 / n if reduction == MEAN and n else 1.0
    losses = np.empty(n, np.float64)
    g = np.empty_like(x)
    _ce_rows(x, labels, t, use_labels, scale, need_grad, losses, g)
    return losses.sum() * scale, (g if need_grad else None)


def cross_entropy_forward(x, labels, reduction, need_grad):
    return _cross_entropy(x, labels, np.empty((0, 0), x.dtype), True, reduction, need_grad)


def cross_entropy_probs_forward(x, t, reduction, need_grad):
    return _cross_entropy(x, np.empty(0, np.int64), t, False, reduction, need_grad)


register("cross_entropy_forward", cross_entropy_forward, cross_entropy_forward_np)
register("cross_entropy_probs_forward", cross_entropy_probs_forward, cross_entropy_probs_forward_np)
