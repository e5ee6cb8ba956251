"""Batch normalisation: training forward, eval forward and the fused backward, with an optional
ReLU/LeakyReLU fused into the normalise pass.

    x, y, grad, dx   (N, C) or (N, C, S) C-contiguous   (S = L for BatchNorm1d, H*W for BatchNorm2d)
    gamma, beta      (C,) x's dtype (ones and zeros when the layer is not affine)
    running_mean/var (C,) x's dtype, updated in place (zero-length arrays when not tracked)
    mean, invstd     (C,) float64: the statistics a forward normalised with, kept for the backward
    dgamma, dbeta    (C,) accumulated into (+=), as PyTorch accumulates into .grad

Per channel c, over its M = N*S values:
    training:  mean = sum(x) / M,  var = sum((x - mean)^2) / M           (biased, to normalise)
               running = (1 - m) * running + m * batch, with var * M / (M - 1) for running_var
    eval:      mean, var = running_mean, running_var
    xhat = (x - mean) * invstd,  invstd = 1 / sqrt(var + eps),  y = act(gamma * xhat + beta)
    backward:  g = grad * act'(y),  dbeta += sum(g),  dgamma += sum(g * xhat)
               batch statistics:   dx = gamma * invstd * (g - (sum(g) + xhat * sum(g * xhat)) / M)
               running statistics: dx = gamma * invstd * g

act is a code from kernels.activations: IDENTITY, RELU or LEAKY_RELU (the layer runs the other
codes through the separate activation kernels). All three are "y = z if z > 0 else z * s" with
s = 1, 0 and slope, so one branch-free select serves them (_vmath.leaky, which also gives PyTorch's
results at NaN and -inf), and act'(y) is 1 if y > 0 else s (_vmath.leaky_grad).

Numerics: the statistics are sums in float64 of d = x - shift, shift being the channel's first
value, in one pass (the shifted-data algorithm: close to the mean, so S2/M - (S1/M)^2 does not
cancel). The float64 mean is split into hi + lo in x's dtype and x - mean is computed as
(x - hi) - lo: x - hi is exact for x near the mean, so float32 data with mean 1e4 and spread 1e-2
normalises to float32 accuracy, not to the 1e-3 ulp of 1e4.

Synchronised batch norm (fastlayers' SyncBatchNorm, statistics over the ranks' global batch) runs
the same passes split where the ranks exchange sums: batchnorm_stats (a channel's local mean and
sum of squared deviations, from the same shifted sums), then, with the global statistics,
batchnorm_apply_forward (the normalise pass); back, batchnorm_grad_sums (sum(g') and
sum(g' xhat), float64), then, with the global sums divided by the global count,
batchnorm_input_grad (dx = gamma invstd (g' - mean_g - xhat mean_gx)).

BatchNorm2d + activation + 2x2 max pooling, fused, is in kernels/batchnorm_pool.py.

Layout: (N, C, S) planes are contiguous, so a thread owns channel c and walks its N planes. (N, C)
rows would stride by C per value of one channel, so the rows kernels walk rows in order with
per-channel accumulators (which vectorise across channels), a thread owning a block of channels.
"""
import numpy as np
from numba import njit, prange

from kernels import _loops, _vmath
from kernels._registry import OPTIONS, compiled, register
from kernels.activations import IDENTITY, LEAKY_RELU, RELU

FUSED_ACTS = (IDENTITY, RELU, LEAKY_RELU)
_BLOCK = 64  # channels per thread-owned block in the parallel (N, C) kernels
# Parallel from 2^18 elements: at (128, 32, 14, 14) the parallel build runs in about 0.6x the serial
# time on 2 CPUs; at (128, 512) (65k elements) the serial build is faster. On a machine whose other
# CPU is busy the parallel build is slower: ``fl.set_num_threads(1)`` runs serially.
PAR_MIN = 1 << 18


def negative_scale(act, slope):
    """s in "act(z) = z if z > 0 else z * s" for a fused activation code."""
    if act == RELU:
        return 0.0
    if act == LEAKY_RELU:
        return float(slope)
    return 1.0


def _split(mean, dtype):
    """The float64 ``mean`` as hi + lo in ``dtype`` (lo is 0 for float64)."""
    hi = mean.astype(dtype)
    return hi, (mean - hi).astype(dtype)


def _channels(x):
    """Reduction axes and the (1, C, 1...) broadcast shape of per-channel arrays."""
    return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


# ----------------------------------------------------------------------------------------- NumPy twins

def _affine_act_np(x, mean, invstd, gamma, beta, s):
    _, shape = _channels(x)
    dt = x.dtype.type
    hi, lo = _split(mean, x.dtype)
    xhat = ((x - hi.reshape(shape)) - lo.reshape(shape)) * invstd.astype(x.dtype).reshape(shape)
    z = xhat * gamma.reshape(shape) + beta.reshape(shape)
    if s == 0:  # ReLU: NaN stays NaN and -inf gives 0, as in PyTorch
        return np.where(z <= 0, dt(0), z)
    return np.where(z > 0, z, z * dt(s))


def _update_running_np(running_mean, running_var, mean, var, m, momentum):
    if running_mean.size:
        unbiased = var * (m / (m - 1)) if m > 1 else var
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        running_var[...] = (1 - momentum) * running_var + momentum * unbiased


def batchnorm_train_forward_np(x, gamma, beta, running_mean, running_var, momentum, eps, act,
                               slope):
    axes, _ = _channels(x)
    mean = x.mean(axis=axes, dtype=np.float64)
    var = x.var(axis=axes, dtype=np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    y = _affine_act_np(x, mean, invstd, gamma, beta, negative_scale(act, slope))
    _update_running_np(running_mean, running_var, mean, var, x.size // x.shape[1], momentum)
    return y, mean, invstd


def batchnorm_eval_forward_np(x, gamma, beta, running_mean, running_var, eps, act, slope):
    mean = running_mean.astype(np.float64)
    invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    return _affine_act_np(x, mean, invstd, gamma, beta, negative_scale(act, slope)), mean, invstd


def batchnorm_backward_np(grad, x, y, gamma, mean, invstd, act, slope, batch_stats, dgamma, dbeta,
                          need_dx):
    axes, shape = _channels(x)
    dt = x.dtype.type
    s = negative_scale(act, slope)
    if s == 0:  # ReLU: a NaN output passes the gradient, as PyTorch's threshold_backward
        g = np.where(y <= 0, dt(0), grad)
    else:
        g = grad if s == 1.0 else np.where(y > 0, grad, grad * dt(s))
    hi, lo = _split(mean, x.dtype)
    inv = invstd.astype(x.dtype).reshape(shape)
    xhat = ((x - hi.reshape(shape)) - lo.reshape(shape)) * inv
    sum_g = g.sum(axis=axes, dtype=np.float64)
    sum_gx = (g * xhat).sum(axis=axes, dtype=np.float64)
    dgamma += sum_gx.astype(dgamma.dtype)
    dbeta += sum_g.astype(dbeta.dtype)
    if not need_dx:
        return None
    k = (gamma * invstd).astype(x.dtype).reshape(shape)
    if not batch_stats:
        return g * k
    m = x.size // x.shape[1]
    a = (sum_g / m).astype(x.dtype).reshape(shape)
    b = (sum_gx / m).astype(x.dtype).reshape(shape)
    return (g - a - xhat * b) * k


def _act_grad_np(grad, y, act, slope):
    """g' = grad * act'(y)."""
    dt = grad.dtype.type
    s = negative_scale(act, slope)
    if s == 0:
        return np.where(y <= 0, dt(0), grad)
    return grad if s == 1.0 else np.where(y > 0, grad, grad * dt(s))


def _xhat_np(x, mean, invstd):
    _, shape = _channels(x)
    hi, lo = _split(mean, x.dtype)
    return ((x - hi.reshape(shape)) - lo.reshape(shape)) * invstd.astype(x.dtype).reshape(shape)


def batchnorm_stats_np(x):
    axes, shape = _channels(x)
    mean = x.mean(axis=axes, dtype=np.float64)
    d = x.astype(np.float64) - mean.reshape(shape)
    return mean, (d * d).sum(axis=axes)


def batchnorm_apply_forward_np(x, gamma, beta, mean, invstd, act, slope):
    return _affine_act_np(x, mean, invstd, gamma, beta, negative_scale(act, slope))


def batchnorm_grad_sums_np(grad, x, y, mean, invstd, act, slope):
    axes, _ = _channels(x)
    g = _act_grad_np(grad, y, act, slope)
    return g.sum(axis=axes, dtype=np.float64), (g * _xhat_np(x, mean, invstd)).sum(
        axis=axes, dtype=np.float64)


def batchnorm_input_grad_np(grad, x, y, gamma, mean, invstd, act, slope, mean_g, mean_gx):
    _, shape = _channels(x)
    g = _act_grad_np(grad, y, act, slope)
    k = (gamma * invstd).astype(x.dtype).reshape(shape)
    a = mean_g.astype(x.dtype).reshape(shape)
    b = mean_gx.astype(x.dtype).reshape(shape)
    return (g - a - _xhat_np(x, mean, invstd) * b) * k


# ---------------------------------------------------------------------------------------- Numba kernels

@njit(**OPTIONS)
def _plane_grad_sums(grad, y, x, c, hi, s, a1, a2):
    # sum(g') and sum(g' * (x - hi)) over channel c, g' = grad * act'(y); vertical as plane_sums.
    n, _, ns = x.shape
    sg = 0.0
    sgh = 0.0
    for k0 in range(0, ns, a1.size):
        k1 = min(ns, k0 + a1.size)
        b1 = a1[:k1 - k0]
        b2 = a2[:k1 - k0]
        b1[:] = 0.0
        b2[:] = 0.0
        for i in range(n):
            g = grad[i, c, k0:k1]
            yr = y[i, c, k0:k1]
            p = x[i, c, k0:k1]
            for k in range(g.size):
                gk = _vmath.leaky_grad(g[k], yr[k], s)
                b1[k] += np.float64(gk)
                b2[k] += np.float64(gk * (p[k] - hi))
        for k in range(b1.size):
            sg += b1[k]
            sgh += b2[k]
    return sg, sgh


@njit(**OPTIONS)
def _input_grad(g, y, p, o, hi, lo, inv, k0, ca, cb, s):
    # o = k0 * (g' - ca - xhat * cb) over a contiguous vector (ca = cb = 0: running statistics).
    for k in range(g.size):
        gk = _vmath.leaky_grad(g[k], y[k], s)
        o[k] = k0 * (gk - ca - ((p[k] - hi) - lo) * inv * cb)


@compiled(parallel_min=PAR_MIN)
def _train_planes(x, y, gamma, beta, mean, invstd, rmean, rvar, momentum, eps, s):
    # x, y: (N, C, S). Thread owns channel c: y[:, c], mean[c], invstd[c], rmean[c], rvar[c].
    n, nc, _ = x.shape
    dt = x.dtype.type
    for c in prange(nc):
        _loops.plane_stats(x, c, eps, mean, invstd, rmean, rvar, momentum)
        hi, lo, a = _loops.channel_affine(x, c, mean, invstd, gamma)
        for i in range(n):
            _loops.normalise(x[i, c], y[i, c], hi, lo, a, beta[c], dt(s))


@compiled(parallel_min=PAR_MIN)
def _train_rows(x, y, gamma, beta, mean, invstd, rmean, rvar, momentum, eps, s, width):
    # x, y: (N, C). Thread owns channel block cb: columns j0:j1 (width of them) of y, mean, invstd,
    # rmean and rvar. Rows are walked in order; the accumulators are the block's own arrays.
    n, nc = x.shape
    dt = x.dtype.type
    neg = dt(s)
    for cb in prange((nc + width - 1) // width):
        j0 = cb * width
        j1 = min(nc, j0 + width)
        w = j1 - j0
        sh = x[0, j0:j1].astype(np.float64)
        a1 = np.zeros(w, np.float64)
        a2 = np.zeros(w, np.float64)
        for i in range(n):
            row = x[i, j0:j1]
            for j in range(w):
                d = np.float64(row[j]) - sh[j]
                a1[j] += d
                a2[j] += d * d
        hi = np.empty(w, x.dtype)
        lo = np.empty(w, x.dtype)
        a = np.empty(w, x.dtype)
        b = np.empty(w, x.dtype)
        for j in range(w):
            c = j0 + j
            _loops.channel_stats(a1[j], a2[j], sh[j], n, eps, c, mean, invstd, rmean, rvar, momentum)
            hi[j] = dt(mean[c])
            lo[j] = dt(mean[c] - hi[j])
            a[j] = dt(invstd[c]) * gamma[c]
            b[j] = beta[c]
        for i in range(n):
            row = x[i, j0:j1]
            out = y[i, j0:j1]
            for j in range(w):
                z = ((row[j] - hi[j]) - lo[j]) * a[j] + b[j]
                out[j] = _vmath.leaky(z, neg)


@compiled(parallel_min=PAR_MIN)
def _eval_planes(x, y, gamma, beta, mean, invstd, s):
    # x, y: (N, C, S). Thread owns channel c: y[:, c].
    n, nc, _ = x.shape
    dt = x.dtype.type
    for c in prange(nc):
        hi, lo, a = _loops.channel_affine(x, c, mean, invstd, gamma)
        for i in range(n):
            _loops.normalise(x[i, c], y[i, c], hi, lo, a, beta[c], dt(s))


@compiled(parallel_min=PAR_MIN)
def _eval_rows(x, y, hi, lo, a, b, s):
    # x, y: (N, C); hi, lo, a, b: (C,) x's dtype. Thread owns row i of y.
    neg = x.dtype.type(s)
    for i in prange(x.shape[0]):
        row = x[i]
        out = y[i]
        for j in range(row.size):
            z = ((row[j] - hi[j]) - lo[j]) * a[j] + b[j]
            out[j] = _vmath.leaky(z, neg)


@compiled(parallel_min=PAR_MIN)
def _backward_planes(grad, x, y, gamma, mean, invstd, s, batch_stats, need_dx, dgamma, dbeta, dx):
    # grad, x, y, dx: (N, C, S). Thread owns channel c: dx[:, c], dgamma[c], dbeta[c].
    n, nc, ns = x.shape
    dt = x.dtype.type
    neg = dt(s)
    for c in prange(nc):
        hi, lo, _ = _loops.channel_affine(x, c, mean, invstd, gamma)
        inv = dt(invstd[c])
        a1 = np.empty(min(ns, _loops.SPAN), np.float64)
        a2 = np.empty(min(ns, _loops.SPAN), np.float64)
        sg, sgh = _plane_grad_sums(grad, y, x, c, hi, neg, a1, a2)
        k0, ca, cb = _loops.grad_coeffs(x, c, sg, sgh, lo, gamma, invstd, batch_stats, dgamma, dbeta)
        if need_dx:
            for i in range(n):
                _input_grad(grad[i, c], y[i, c], x[i, c], dx[i, c], hi, lo, inv, k0, ca, cb, neg)


@compiled(parallel_min=PAR_MIN)
def _backward_rows(grad, x, y, gamma, mean, invstd, s, batch_stats, need_dx, dgamma, dbeta, dx,
                   width):
    # grad, x, y, dx: (N, C). Thread owns channel block cb: columns j0:j1 (width of them) of dx,
    # dgamma and dbeta; the accumulators are the block's own arrays.
    n, nc = x.shape
    dt = x.dtype.type
    neg = dt(s)
    for cb in prange((nc + width - 1) // width):
        j0 = cb * width
        j1 = min(nc, j0 + width)
        w = j1 - j0
        hi = np.empty(w, x.dtype)
        lo = np.empty(w, x.dtype)
        inv = np.empty(w, x.dtype)
        for j in range(w):
            hi[j] = dt(mean[j0 + j])
            lo[j] = dt(mean[j0 + j] - hi[j])
            inv[j] = dt(invstd[j0 + j])
        a1 = np.zeros(w, np.float64)
        a2 = np.zeros(w, np.float64)
        for i in range(n):
            gr = grad[i, j0:j1]
            yr = y[i, j0:j1]
            xr = x[i, j0:j1]
            for j in range(w):
                gj = _vmath.leaky_grad(gr[j], yr[j], neg)
                a1[j] += np.float64(gj)
                a2[j] += np.float64(gj * (xr[j] - hi[j]))
        k0 = np.empty(w, x.dtype)
        ca = np.zeros(w, x.dtype)
        cc = np.zeros(w, x.dtype)
        for j in range(w):
            c = j0 + j
            sgx = invstd[c] * (a2[j] - np.float64(lo[j]) * a1[j])
            dgamma[c] += dgamma.dtype.type(sgx)
            dbeta[c] += dbeta.dtype.type(a1[j])
            k0[j] = dt(gamma[c] * invstd[c])
            if batch_stats:
                ca[j] = dt(a1[j] / n)
                cc[j] = dt(sgx / n)
        if need_dx:
            for i in range(n):
                gr = grad[i, j0:j1]
                yr = y[i, j0:j1]
                xr = x[i, j0:j1]
                out = dx[i, j0:j1]
                for j in range(w):
                    gj = _vmath.leaky_grad(gr[j], yr[j], neg)
                    out[j] = k0[j] * (gj - ca[j] - ((xr[j] - hi[j]) - lo[j]) * inv[j] * cc[j])


@compiled(parallel_min=PAR_MIN)
def _stats_planes(x, mean, m2):
    # x: (N, C, S). Thread owns channel c: mean[c], m2[c] (sum of squared deviations), from the
    # sums shifted by the channel's first value (as _train_planes).
    ns = x.shape[2]
    m = x.size // x.shape[1]
    for c in prange(x.shape[1]):
        sh = np.float64(x[0, c, 0])
        a1 = np.empty(min(ns, _loops.SPAN), np.float64)
        a2 = np.empty(min(ns, _loops.SPAN), np.float64)
        s1, s2 = _loops.plane_sums(x, c, sh, a1, a2)
        mean[c] = sh + s1 / m
        m2[c] = max(s2 - s1 * (s1 / m), 0.0)


@compiled(parallel_min=PAR_MIN)
def _stats_rows(x, mean, m2, width):
    # x: (N, C). Thread owns channel block cb: columns j0:j1 of mean and m2; rows walked in order
    # with the block's own accumulators (as _train_rows).
    n, nc = x.shape
    for cb in prange((nc + width - 1) // width):
        j0 = cb * width
        j1 = min(nc, j0 + width)
        w = j1 - j0
        sh = x[0, j0:j1].astype(np.float64)
        a1 = np.zeros(w, np.float64)
        a2 = np.zeros(w, np.float64)
        for i in range(n):
            row = x[i, j0:j1]
            for j in range(w):
                d = np.float64(row[j]) - sh[j]
                a1[j] += d
                a2[j] += d * d
        for j in range(w):
            mean[j0 + j] = sh[j] + a1[j] / n
            m2[j0 + j] = max(a2[j] - a1[j] * (a1[j] / n), 0.0)


@compiled(parallel_min=PAR_MIN)
def _input_grad_planes(grad, x, y, gamma, mean, invstd, s, mean_g, mean_gx, dx):
    # grad, x, y, dx: (N, C, S). Thread owns channel c: dx[:, c].
    n, nc, _ = x.shape
    dt = x.dtype.type
    neg = dt(s)
    for c in prange(nc):
        hi, lo, _ = _loops.channel_affine(x, c, mean, invstd, gamma)
        k0 = dt(gamma[c] * invstd[c])
        ca = dt(mean_g[c])
        cb = dt(mean_gx[c])
        inv = dt(invstd[c])
        for i in range(n):
            _input_grad(grad[i, c], y[i, c], x[i, c], dx[i, c], hi, lo, inv, k0, ca, cb, neg)


@compiled(parallel_min=PAR_MIN)
def _input_grad_rows(grad, x, y, hi, lo, inv, k0, ca, cb, s, dx):
    # grad, x, y, dx: (N, C); the per-channel constants (C,) in x's dtype. Thread owns row i of dx.
    neg = x.dtype.type(s)
    for i in prange(x.shape[0]):
        _input_grad_row(grad[i], y[i], x[i], dx[i], hi, lo, inv, k0, ca, cb, neg)


@njit(**OPTIONS)
def _input_grad_row(g, y, p, o, hi, lo, inv, k0, ca, cb, s):
    # One row of _input_grad_rows: o = k0 * (g' - ca - xhat * cb), a constant per column.
    for j in range(g.size):
        gj = _vmath.leaky_grad(g[j], y[j], s)
        o[j] = k0[j] * (gj - ca[j] - ((p[j] - hi[j]) - lo[j]) * inv[j] * cb[j])


# ------------------------------------------------------------------------------ public entry points

def planes(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def _width(dispatch, x):
    """Channels per block for an (N, C) kernel: all of them when the serial build will run (one
    block, rows walked once), else blocks of _BLOCK so every thread gets some."""
    return _BLOCK if dispatch.runs_parallel(x.size) else x.shape[1]


def batchnorm_train_forward(x, gamma, beta, running_mean, running_var, momentum, eps, act, slope):
    nc = x.shape[1]
    y = np.empty_like(x)
    mean = np.empty(nc, np.float64)
    invstd = np.empty(nc, np.float64)
    s = negative_scale(act, slope)
    if x.ndim == 2:
        _train_rows(x, y, gamma, beta, mean, invstd, running_mean, running_var, float(momentum),
                    float(eps), s, _width(_train_rows, x))
    else:
        _train_planes(planes(x), planes(y), gamma, beta, mean, invstd, running_mean, running_var,
                      float(momentum), float(eps), s)
    return y, mean, invstd


def batchnorm_eval_forward(x, gamma, beta, running_mean, running_var, eps, act, slope):
    mean = running_mean.astype(np.float64)
    invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    return batchnorm_apply_forward(x, gamma, beta, mean, invstd, act, slope), mean, invstd


def batchnorm_apply_forward(x, gamma, beta, mean, invstd, act, slope):
    """act(gamma (x - mean) invstd + beta) with given float64 statistics (C,)."""
    y = np.empty_like(x)
    s = negative_scale(act, slope)
    if x.ndim == 2:
        hi, lo = _split(mean, x.dtype)
        a = (invstd.astype(x.dtype) * gamma).astype(x.dtype)
        _eval_rows(x, y, hi, lo, a, beta, s)
    else:
        _eval_planes(planes(x), planes(y), gamma, beta, mean, invstd, s)
    return y


def batchnorm_stats(x):
    """Per channel of this batch: (mean, sum of squared deviations from it), float64 (C,)."""
    nc = x.shape[1]
    mean = np.empty(nc, np.float64)
    m2 = np.empty(nc, np.float64)
    if x.ndim == 2:
        _stats_rows(x, mean, m2, _width(_stats_rows, x))
    else:
        _stats_planes(planes(x), mean, m2)
    return mean, m2


def batchnorm_grad_sums(grad, x, y, mean, invstd, act, slope):
    """Per channel: (sum(g'), sum(g' xhat)) in float64, g' = grad * act'(y)."""
    gamma = np.ones(x.shape[1], x.dtype)   # not read without the input gradient
    sum_gx = np.zeros(x.shape[1], np.float64)
    sum_g = np.zeros(x.shape[1], np.float64)
    batchnorm_backward(grad, x, y, gamma, mean, invstd, act, slope, True, sum_gx, sum_g, False)
    return sum_g, sum_gx


def batchnorm_input_grad(grad, x, y, gamma, mean, invstd, act, slope, mean_g, mean_gx):
    """dx = gamma invstd (g' - mean_g - xhat mean_gx), the batch-statistics input gradient with
    the channel means of g' and g' xhat given (float64 (C,), over the global batch)."""
    s = negative_scale(act, slope)
    if s == 1.0:
        y = x  # as batchnorm_backward: act'(y) is 1 whatever y is
    dx = np.empty_like(x)
    if x.ndim == 2:
        dt = x.dtype
        hi, lo = _split(mean, dt)
        _input_grad_rows(grad, x, y, hi, lo, invstd.astype(dt), (gamma * invstd).astype(dt),
                         mean_g.astype(dt), mean_gx.astype(dt), s, dx)
    else:
        _input_grad_planes(planes(grad), planes(x), planes(y), gamma, mean, invstd, s, mean_g,
                           mean_gx, planes(dx))
    return dx


def batchnorm_backward(grad, x, y, gamma, mean, invstd, act, slope, batch_stats, dgamma, dbeta,
                       need_dx):
    s = negative_scale(act, slope)
    if s == 1.0:
        y = x  # act'(y) is 1 whatever y is; reading x again costs no memory traffic
    dx = np.empty_like(x) if need_dx else np.empty((1,) * x.ndim, x.dtype)
    if x.ndim == 2:
        _backward_rows(grad, x, y, gamma, mean, invstd, s, bool(batch_stats), bool(need_dx),
                       dgamma, dbeta, dx, _width(_backward_rows, x))
    else:
        _backward_planes(planes(grad), planes(x), planes(y), gamma, mean, invstd, s,
                         bool(batch_stats), bool(need_dx), dgamma, dbeta,
                         planes(dx) if need_dx else dx.reshape(1, 1, 1))
    return dx if need_dx else None


register("batchnorm_train_forward", batchnorm_train_forward, batchnorm_train_forward_np)
register("batchnorm_eval_forward", batchnorm_eval_forward, batchnorm_eval_forward_np)
register("batchnorm_backward", batchnorm_backward, batchnorm_backward_np)
register("batchnorm_apply_forward", batchnorm_apply_forward, batchnorm_apply_forward_np)
register("batchnorm_stats", batchnorm_stats, batchnorm_stats_np)
register("batchnorm_grad_sums", batchnorm_grad_sums, batchnorm_grad_sums_np)
register("batchnorm_input_grad", batchnorm_input_grad, batchnorm_input_grad_np)
