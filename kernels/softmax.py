"""Softmax, log-softmax, and cross-entropy fused with its gradient.

    x, y, grad (N, C): softmax over the last axis, one row per sample.

softmax:      y = exp(x - max) / sum(exp(x - max))      (shifting by the row max keeps exp <= 1, so
                                                         inputs of magnitude 1e4 are fine)
   backward:  dx = y * (g - sum(g * y))                 (the Jacobian-vector product, no C x C matrix)
log_softmax:  y = x - max - log(sum(exp(x - max)))
   backward:  dx = g - exp(y) * sum(g)

cross-entropy on logits, one pass per row giving loss and gradient together. Each variant is an
effective target q (C,) per row, with class weights w (C,) (ones without) and label smoothing eps:
   labels t (N,) int64:        q = (1 - eps) w_t onehot(t) + (eps / C) w   (0 if t == ignore_index)
   probabilities t (N, C):     q = w ((1 - eps) t + eps / C)
   loss_n = sum_c q_c (lse_n - x_c)                dx = softmax * sum(q) - q
   reduction: SUM adds the losses; MEAN divides loss and gradient by sum_n w_{t_n} over the targets
   not ignored (labels; NaN when every target is ignored) or by N (probabilities), as PyTorch;
   NONE gives the per-row losses (in x's dtype) and the unscaled gradient. Accumulation in float64.
   x may also be (N, C, S), the classes on axis 1, with targets (N, S) or (N, C, S): it runs as
   N*S rows (transposed in and out).

The elementwise exponentials are kernels/_vmath.py's exp, in a loop of their own so that it
vectorises (Numba's np.exp is a scalar libm call); the one log per row stays np.log.
"""
import functools
import math

import numpy as np
from numba import njit, prange

from kernels import _vmath
from kernels._registry import OPTIONS, compiled, kernel, register

SUM, MEAN, NONE = 0, 1, 2


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


def _ce_np(x, q, denom, reduction, need_grad, out_shape, keep=None):
    """Loss and gradient of sum_c q_c (lse - x_c) over axis 1 of x (N, C, S), q float64 of that
    shape; ``keep`` (N, 1, S) marks the rows whose gradient is not forced to 0 (ignored targets)."""
    n, c = x.shape[:2]
    x3 = x.reshape(q.shape).astype(np.float64)
    logp = x3 - x3.max(axis=1, keepdims=True) if x3.size else x3
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    losses = -(q * logp).sum(axis=1)
    with np.errstate(divide="ignore"):
        scale = 1.0 if reduction != MEAN else np.float64(1.0) / denom
    loss = losses.astype(x.dtype).reshape(out_shape) if reduction == NONE else float(
        losses.sum()) * float(scale)
    if not need_grad:
        return loss, None
    with np.errstate(invalid="ignore"):
        g = (np.exp(logp) * q.sum(axis=1, keepdims=True) - q) * scale
    if keep is not None:
        g = np.where(keep, g, 0.0)
    return loss, g.astype(x.dtype).reshape(x.shape)


def _spatial(x):
    return math.prod(x.shape[2:])


def cross_entropy_forward_np(x, labels, reduction, need_grad, weight=None, ignore_index=-100,
                             label_smoothing=0.0):
    n, c = x.shape[:2]
    y = labels.reshape(n, _spatial(x))
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    keep = y != ignore_index
    yk = np.where(keep, y, 0)
    wy = w[yk] * keep                                                   # (N, S)
    onehot = np.arange(c)[None, :, None] == yk[:, None, :]              # (N, C, S)
    q = ((1 - label_smoothing) * wy[:, None, :] * onehot
         + label_smoothing / c * w[None, :, None] * keep[:, None, :])
    return _ce_np(x, q, wy.sum(), reduction, need_grad, labels.shape, keep[:, None, :])


def cross_entropy_probs_forward_np(x, t, reduction, need_grad, weight=None, label_smoothing=0.0):
    n, c = x.shape[:2]
    s = _spatial(x)
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    q = w[None, :, None] * ((1 - label_smoothing) * t.reshape(n, c, s).astype(np.float64)
                            + label_smoothing / c)
    return _ce_np(x, q, n * s, reduction, need_grad, (n,) + x.shape[2:])

# ---------------------------------------------------------------------------------------- Numba kernels
# The kernels with exps run blocks of ROWS rows per thread (prange over the blocks, each thread owns
# rows [b*ROWS, (b+1)*ROWS) of its outputs); softmax_backward, with no exp, runs one row per thread.
ROWS = 32


@njit(inline="always", **OPTIONS)
def _exp_shifted(x, out, m, s):
    # x, out: (R, C), a block of rows; m: (R,) in x's dtype or float64; s: (R,) float64. Writes
    # m[r] = max(x[r]), out[r, c] = exp(x[r, c] - m[r]) and s[r] = sum(out[r]). Serial: called per
    # block from inside the block-parallel kernels below. Three passes: max and shift per row; exp
    # over the whole block (one long vectorised loop, however short the rows: at 10 classes a loop
    # per row would leave most exps to the scalar remainder); sum per row.
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


@njit(inline="always", **OPTIONS)
def _label_row(row, out, y, w, lse, s, scale, need_grad):
    # One row of labels without smoothing: q = w_y onehot(y); out holds the row's exponentials
    # (their sum is s) and receives the gradient. Returns the row's loss.
    a = w[y]
    if need_grad:
        inv = row.dtype.type(scale * a / s)
        for c in range(row.size):
            out[c] *= inv
        out[y] -= row.dtype.type(scale * a)
    return a * (lse - row[y])


@njit(inline="always", **OPTIONS)
def _smoothed_label_row(row, out, y, w, om, b, wsum, lse, s, scale, need_grad):
    # One row of labels with smoothing: q = om w_y onehot(y) + b w (om = 1 - eps, b = eps / C).
    a = om * w[y]
    acc = 0.0
    for c in range(row.size):
        acc += w[c] * (lse - row[c])
    if need_grad:
        inv = row.dtype.type(scale * (a + b * wsum) / s)
        sb = row.dtype.type(scale * b)
        for c in range(row.size):
            out[c] = out[c] * inv - sb * w[c]
        out[y] -= row.dtype.type(scale * a)
    return a * (lse - row[y]) + b * acc


@njit(inline="always", **OPTIONS)
def _probs_row(row, out, tr, w, om, b, lse, s, scale, need_grad):
    # One row of probabilities: q = w (om t + b); as _label_row otherwise.
    acc = 0.0
    qsum = 0.0
    for c in range(row.size):
        q = w[c] * (om * tr[c] + b)
        acc += q * (lse - row[c])
        qsum += q
    if need_grad:
        inv = row.dtype.type(scale * qsum / s)
        so, sb = row.dtype.type(scale * om), row.dtype.type(scale * b)
        for c in range(row.size):
            out[c] = out[c] * inv - w[c] * (so * tr[c] + sb)
    return acc


# The target kinds of the cross-entropy kernel, one build each (_ce_rows[kind]).
LABELS, SMOOTHED, PROBS = 0, 1, 2
TARGET = None                   # bound per build


def _ce_rows_src(x, labels, t, w, ignore_index, smoothing, reduction, need_grad, g, out):
    # x, g: (N, C); labels (N,) (LABELS, SMOOTHED) or t (N, C) (PROBS); w (C,) class weights in
    # x's dtype; out (3N,) float64: the row losses, then scratch for the row maxima and sums (one
    # array that the caller allocates: an allocation inside the kernel lengthens its first compile
    # by tenths of a second); smoothing: the label smoothing (SMOOTHED, PROBS). Returns the
    # gradient's scale (1 / the MEAN normaliser, else 1). The normaliser is a serial pass over the
    # labels before the rows; then each thread owns a block of rows of g and of the losses. The
    # exponentials go straight into the gradient rows and are scaled there; without need_grad, g
    # is scratch (one allocation per call, not one per row). TARGET is bound per build, so each
    # build holds only its own kind of row: the smoothing code in the same loop, even untaken,
    # slows the plain rows by 25%, and the other kinds' rows lengthen the compile of a model that
    # uses one kind.
    n, nc = x.shape
    losses, m, s = out[:n], out[n:2 * n], out[2 * n:]
    scale = 1.0
    if reduction == MEAN:
        total = float(n)
        if TARGET != PROBS:
            total = 0.0
            for r in range(n):
                if labels[r] != ignore_index:
                    total += w[labels[r]]
        scale = 1.0 / total             # inf when every target is ignored: the mean is then NaN
    om, b, wsum = 1.0, 0.0, 0.0
    if TARGET != LABELS:
        om, b = 1.0 - smoothing, smoothing / nc
    if TARGET == SMOOTHED:
        wsum = _vmath.sum64(w)
    for blk in prange((n + ROWS - 1) // ROWS):
        r0, r1 = blk * ROWS, min(n, (blk + 1) * ROWS)
        _exp_shifted(x[r0:r1], g[r0:r1], m[r0:r1], s[r0:r1])
        for r in range(r0, r1):
            lse = m[r] + np.log(s[r])
            if TARGET == PROBS:
                losses[r] = _probs_row(x[r], g[r], t[r], w, om, b, lse, s[r], scale, need_grad)
            elif labels[r] == ignore_index:
                losses[r] = 0.0
                if need_grad:
                    gr = g[r]
                    for c in range(nc):
                        gr[c] = 0
            elif TARGET == LABELS:
                losses[r] = _label_row(x[r], g[r], labels[r], w, lse, s[r], scale, need_grad)
            else:
                losses[r] = _smoothed_label_row(x[r], g[r], labels[r], w, om, b, wsum, lse, s[r],
                                                scale, need_grad)
    return scale


_ce_rows = {kind: compiled(parallel_min=1 << 13, bind={"TARGET": kind}, variant=name)(_ce_rows_src)
            for kind, name in ((LABELS, "labels"), (SMOOTHED, "smoothed"), (PROBS, "probs"))}


@functools.lru_cache(maxsize=64)
def unit_weights(c, dtype):
    """Class weights of 1 for (c, dtype), made once: the kernels read them and write nothing
    (writable, not read-only: Numba would compile a read-only array as another type)."""
    return np.ones(c, dtype)


_NO_LABELS = np.empty(0, np.int64)


def _rows(a):
    """(N, C, S) -> (N*S, C), C-contiguous: one row of classes per sample and position."""
    return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(-1, a.shape[1])


def _cross_entropy(x, labels, t, use_labels, weight, ignore_index, smoothing, reduction,
                   need_grad):
    shape = x.shape
    if x.ndim == 3:
        x = _rows(x)
        labels, t = (labels.reshape(-1), t) if use_labels else (labels, _rows(t))
    w = unit_weights(shape[1], x.dtype) if weight is None else weight
    n = x.shape[0]
    if t is None:
        t = x[:0]                       # the label kernels' unused probabilities, typed as x
    g, out = np.empty_like(x), np.empty(3 * n, np.float64)
    losses = out[:n]
    kind = PROBS if not use_labels else SMOOTHED if smoothing else LABELS
    scale = _ce_rows[kind](x, labels, t, w, ignore_index, float(smoothing), reduction, need_grad,
                           g, out)
    if reduction == NONE:
        loss = losses.astype(x.dtype).reshape((shape[0],) + shape[2:])
    else:
        loss = float(losses.sum()) * scale
    if not need_grad:
        return loss, None
    if len(shape) == 3:
        g = np.ascontiguousarray(g.reshape(shape[0], shape[2], shape[1]).transpose(0, 2, 1))
    return loss, g


def cross_entropy_forward(x, labels, reduction, need_grad, weight=None, ignore_index=-100,
                          label_smoothing=0.0):
    return _cross_entropy(x, labels, None, True, weight, ignore_index, label_smoothing, reduction,
                          need_grad)


def cross_entropy_probs_forward(x, t, reduction, need_grad, weight=None, label_smoothing=0.0):
    return _cross_entropy(x, _NO_LABELS, t, False, weight, -100, label_smoothing,
                          reduction, need_grad)


register("cross_entropy_forward", cross_entropy_forward, cross_entropy_forward_np)
register("cross_entropy_probs_forward", cross_entropy_probs_forward, cross_entropy_probs_forward_np)
