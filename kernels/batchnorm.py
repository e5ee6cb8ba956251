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

BatchNorm2d + activation + 2x2 max pooling (stride 2, no padding), fused for training (batch
statistics), as Sequential(BatchNorm2d, ReLU, MaxPool2d(2)) runs:
    forward:   the statistics pass as above, then one pass that normalises each plane (with the
               activation) into a plane-sized buffer that stays in L1, and keeps only each 2x2
               window's maximum and its position (idx, uint8: 2 ky + kx; the first maximum in scan
               order, a NaN wins, the last NaN if several: PyTorch's max_pool2d rule). The
               full-size activation is never written to memory.
    backward:  only a window's winner has a gradient, g' = grad * act'(pooled), so the two sums run
               over the winners alone; dx = gamma * invstd * (g' - (sum(g') + xhat sum(g' xhat)) / M)
               is written in one pass over x (g' = 0 away from the winners).
The activation must be non-decreasing (s >= 0) so that pooling its output picks the same input as
pooling before it would; a pooled value > 0 then means the winner's pre-activation was > 0.

Layout: (N, C, S) planes are contiguous, so a thread owns channel c and walks its N planes. (N, C)
rows would stride by C per value of one channel, so the rows kernels walk rows in order with
per-channel accumulators (which vectorise across channels), a thread owning a block of channels.
"""
import numpy as np
from numba import njit, prange

from kernels import _vmath
from kernels._registry import OPTIONS, compiled, register
from kernels.activations import IDENTITY, LEAKY_RELU, RELU
from kernels.pool import maxpool2d_backward_np, maxpool2d_forward_np

FUSED_ACTS = (IDENTITY, RELU, LEAKY_RELU)
_BLOCK = 64  # channels per thread-owned block in the parallel (N, C) kernels
_SPAN = 512  # plane positions summed at once by the (N, C, S) kernels (float64 accumulators)
# Parallel from 2^18 elements. Measured on this machine (2 logical CPUs, shared), medians of
# interleaved calls: at (128, 32, 14, 14) the parallel build took 0.45 ms forward and 0.76 ms backward
# against 0.79 and 1.37 serial, at (128, 16, 14, 14) 0.28 / 0.40 against 0.38 / 0.63. An earlier
# session saw the two about even, and the parallel build 2-4x slower while co-tenants kept the other
# CPU busy: ``fl.set_num_threads(1)`` is the way to run serially on such a machine. At (128, 512)
# (65k elements) the serial build is faster.
_PAR = 1 << 18


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


def batchnorm_maxpool_train_forward_np(x, gamma, beta, running_mean, running_var, momentum, eps,
                                       act, slope):
    y, mean, invstd = batchnorm_train_forward_np(x, gamma, beta, running_mean, running_var,
                                                 momentum, eps, act, slope)
    pooled, flat = maxpool2d_forward_np(y, (2, 2), (2, 2), (0, 0))
    row, col = np.divmod(flat, x.shape[3])
    return pooled, (2 * (row % 2) + col % 2).astype(np.uint8), mean, invstd


def batchnorm_maxpool_backward_np(grad, idx, pooled, x, gamma, mean, invstd, act, slope, dgamma,
                                  dbeta, need_dx):
    oh, ow = grad.shape[2:]
    code = idx.astype(np.int64)
    flat = ((2 * np.arange(oh)[:, None] + code // 2) * x.shape[3]
            + 2 * np.arange(ow)[None, :] + code % 2)
    # The full-size gradient and activation, nonzero at the winners only (where the gradient is).
    dense_grad = maxpool2d_backward_np(grad, flat, x.shape)
    dense_y = maxpool2d_backward_np(pooled, flat, x.shape)
    return batchnorm_backward_np(dense_grad, x, dense_y, gamma, mean, invstd, act, slope, True,
                                 dgamma, dbeta, need_dx)


# ---------------------------------------------------------------------------------------- Numba kernels

@njit(**OPTIONS)
def _plane_sums(x, c, sh, a1, a2):
    # Sum of d and d^2 over channel c of x (N, C, S), d = x - sh, in float64. The sums
    # run "vertically": a1[k], a2[k] accumulate position k of a span of the plane over the N planes,
    # so the inner loop carries no dependence and vectorises (a running scalar sum would not).
    # Four planes go at a time, so the accumulators are loaded and stored once per four values:
    # 0.70-0.78x the time of one plane at a time at the cnn's (128, 16, 28, 28) and (128, 32, 14, 14).
    n, _, ns = x.shape
    n4 = n - n % 4
    s1 = 0.0
    s2 = 0.0
    for k0 in range(0, ns, a1.size):
        k1 = min(ns, k0 + a1.size)
        b1 = a1[:k1 - k0]
        b2 = a2[:k1 - k0]
        b1[:] = 0.0
        b2[:] = 0.0
        for i in range(0, n4, 4):
            p0, p1 = x[i, c, k0:k1], x[i + 1, c, k0:k1]
            p2, p3 = x[i + 2, c, k0:k1], x[i + 3, c, k0:k1]
            for k in range(p0.size):
                d0, d1 = np.float64(p0[k]) - sh, np.float64(p1[k]) - sh
                d2, d3 = np.float64(p2[k]) - sh, np.float64(p3[k]) - sh
                b1[k] += (d0 + d1) + (d2 + d3)
                b2[k] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        for i in range(n4, n):
            p = x[i, c, k0:k1]
            for k in range(p.size):
                d = np.float64(p[k]) - sh
                b1[k] += d
                b2[k] += d * d
        for k in range(b1.size):
            s1 += b1[k]
            s2 += b2[k]
    return s1, s2


@njit(**OPTIONS)
def _plane_grad_sums(grad, y, x, c, hi, s, a1, a2):
    # sum(g') and sum(g' * (x - hi)) over channel c, g' = grad * act'(y); vertical as _plane_sums.
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
def _normalise(p, o, hi, lo, a, b, s):
    # o = act(((p - hi) - lo) * a + b) over a contiguous vector; s: see the header.
    for k in range(p.size):
        z = ((p[k] - hi) - lo) * a + b
        o[k] = _vmath.leaky(z, s)


@njit(**OPTIONS)
def _input_grad(g, y, p, o, hi, lo, inv, k0, ca, cb, s):
    # o = k0 * (g' - ca - xhat * cb) over a contiguous vector (ca = cb = 0: running statistics).
    for k in range(g.size):
        gk = _vmath.leaky_grad(g[k], y[k], s)
        o[k] = k0 * (gk - ca - ((p[k] - hi) - lo) * inv * cb)


@njit(**OPTIONS)
def _stats(s1, s2, shift, m, eps, c, mean, invstd, rmean, rvar, momentum):
    # Channel c's mean and invstd from its shifted sums; running statistics updated when tracked.
    mu = s1 / m
    var = max(s2 / m - mu * mu, 0.0)
    mean[c] = shift + mu
    invstd[c] = 1.0 / np.sqrt(var + eps)
    if rmean.size:
        unbiased = var * (m / (m - 1.0)) if m > 1 else var
        rmean[c] = (1.0 - momentum) * rmean[c] + momentum * mean[c]
        rvar[c] = (1.0 - momentum) * rvar[c] + momentum * unbiased


@njit(**OPTIONS)
def _plane_stats(x, c, eps, mean, invstd, rmean, rvar, momentum):
    # Channel c's batch statistics over x (N, C, S): _plane_sums shifted by its first value, then
    # _stats (mean, invstd and the running statistics of channel c).
    ns = x.shape[2]
    sh = np.float64(x[0, c, 0])
    a1 = np.empty(min(ns, _SPAN), np.float64)
    a2 = np.empty(min(ns, _SPAN), np.float64)
    s1, s2 = _plane_sums(x, c, sh, a1, a2)
    _stats(s1, s2, sh, x.size // x.shape[1], eps, c, mean, invstd, rmean, rvar, momentum)


@njit(**OPTIONS)
def _affine(x, c, mean, invstd, gamma):
    # Channel c's float64 mean split into hi + lo in x's dtype (see the header), and the scale
    # a = invstd * gamma: the constants of _normalise.
    dt = x.dtype.type
    hi = dt(mean[c])
    return hi, dt(mean[c] - hi), dt(invstd[c]) * gamma[c]


@njit(**OPTIONS)
def _grad_coeffs(x, c, sg, sgh, lo, gamma, invstd, batch_stats, dgamma, dbeta):
    # From channel c's sums sg = sum(g') and sgh = sum(g' (x - hi)): accumulates dgamma[c] and
    # dbeta[c], and returns the input-gradient constants (k0, ca, cb) of the header's formula.
    # sum(g' xhat) = invstd (sgh - lo sg): the sums pass saves a multiply per value.
    dt = x.dtype.type
    m = x.size // x.shape[1]
    sgx = invstd[c] * (sgh - np.float64(lo) * sg)
    dgamma[c] += dgamma.dtype.type(sgx)
    dbeta[c] += dbeta.dtype.type(sg)
    k0 = dt(gamma[c] * invstd[c])
    ca = dt(sg / m) if batch_stats else dt(0)
    cb = dt(sgx / m) if batch_stats else dt(0)
    return k0, ca, cb


@compiled(parallel_min=_PAR)
def _train_planes(x, y, gamma, beta, mean, invstd, rmean, rvar, momentum, eps, s):
    # x, y: (N, C, S). Thread owns channel c: y[:, c], mean[c], invstd[c], rmean[c], rvar[c].
    n, nc, _ = x.shape
    dt = x.dtype.type
    for c in prange(nc):
        _plane_stats(x, c, eps, mean, invstd, rmean, rvar, momentum)
        hi, lo, a = _affine(x, c, mean, invstd, gamma)
        for i in range(n):
            _normalise(x[i, c], y[i, c], hi, lo, a, beta[c], dt(s))


@compiled(parallel_min=_PAR)
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
            _stats(a1[j], a2[j], sh[j], n, eps, c, mean, invstd, rmean, rvar, momentum)
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


@compiled(parallel_min=_PAR)
def _eval_planes(x, y, gamma, beta, mean, invstd, s):
    # x, y: (N, C, S). Thread owns channel c: y[:, c].
    n, nc, _ = x.shape
    dt = x.dtype.type
    for c in prange(nc):
        hi, lo, a = _affine(x, c, mean, invstd, gamma)
        for i in range(n):
            _normalise(x[i, c], y[i, c], hi, lo, a, beta[c], dt(s))


@compiled(parallel_min=_PAR)
def _eval_rows(x, y, hi, lo, a, b, s):
    # x, y: (N, C); hi, lo, a, b: (C,) x's dtype. Thread owns row i of y.
    neg = x.dtype.type(s)
    for i in prange(x.shape[0]):
        row = x[i]
        out = y[i]
        for j in range(row.size):
            z = ((row[j] - hi[j]) - lo[j]) * a[j] + b[j]
            out[j] = _vmath.leaky(z, neg)


@compiled(parallel_min=_PAR)
def _backward_planes(grad, x, y, gamma, mean, invstd, s, batch_stats, need_dx, dgamma, dbeta, dx):
    # grad, x, y, dx: (N, C, S). Thread owns channel c: dx[:, c], dgamma[c], dbeta[c].
    n, nc, ns = x.shape
    dt = x.dtype.type
    neg = dt(s)
    for c in prange(nc):
        hi, lo, _ = _affine(x, c, mean, invstd, gamma)
        inv = dt(invstd[c])
        a1 = np.empty(min(ns, _SPAN), np.float64)
        a2 = np.empty(min(ns, _SPAN), np.float64)
        sg, sgh = _plane_grad_sums(grad, y, x, c, hi, neg, a1, a2)
        k0, ca, cb = _grad_coeffs(x, c, sg, sgh, lo, gamma, invstd, batch_stats, dgamma, dbeta)
        if need_dx:
            for i in range(n):
                _input_grad(grad[i, c], y[i, c], x[i, c], dx[i, c], hi, lo, inv, k0, ca, cb, neg)


@compiled(parallel_min=_PAR)
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


@njit(**OPTIONS)
def _nan_last(v0, v1, v2, v3, best, k):
    # The window's value and position under max_pool2d's rule when the window's sum is NaN: the
    # last NaN if there is one (else the sum overflowed to inf - inf: keep the first maximum).
    for t, v in enumerate((v0, v1, v2, v3)):
        if v != v:
            best, k = v, t
    return best, k


@njit(inline="always", **OPTIONS)
def _max4(a0, a1, a2, a3):
    # A 2x2 window's maximum and its position 0-3 (values in scan order): the first strict
    # maximum, as selects (no branch, so loops over windows vectorise). NaN: see _nan_last.
    m01 = a1 > a0
    b01 = a1 if m01 else a0
    k01 = np.uint8(1) if m01 else np.uint8(0)
    m2 = a2 > b01
    b2 = a2 if m2 else b01
    k2 = np.uint8(2) if m2 else k01
    m3 = a3 > b2
    return (a3 if m3 else b2), (np.uint8(3) if m3 else k2)


@njit(inline="always", **OPTIONS)
def _max4_row(v0, v1, v2, v3, yrow, irow):
    # One row of 2x2 windows whose values, in scan order, are v0[j], v1[j], v2[j], v3[j]: yrow[j]
    # and irow[j] get the window's maximum and its position (_max4); a window with a NaN is seen
    # in its sum and counted, and the row is then redone under PyTorch's rule (_nan_last).
    nans = 0
    for j in range(yrow.size):
        a0, a1, a2, a3 = v0[j], v1[j], v2[j], v3[j]
        yrow[j], irow[j] = _max4(a0, a1, a2, a3)
        total = (a0 + a1) + (a2 + a3)
        nans += total != total
    if nans:
        for j in range(yrow.size):
            a0, a1, a2, a3 = v0[j], v1[j], v2[j], v3[j]
            total = (a0 + a1) + (a2 + a3)
            if total != total:
                yrow[j], irow[j] = _nan_last(a0, a1, a2, a3, yrow[j], irow[j])


@njit(inline="always", **OPTIONS)
def _pool2x2(buf, wp, yo, io):
    # 2x2 max pooling (stride 2) of a plane stored row after row, Wp values a row, in the flat
    # buffer buf, into yo, io (OH // 2, OW // 2).
    oh, ow = yo.shape
    for i in range(oh):
        ra, rb = buf[2 * i * wp:2 * i * wp + 2 * ow], buf[(2 * i + 1) * wp:(2 * i + 1) * wp + 2 * ow]
        _max4_row(ra[0::2], ra[1::2], rb[0::2], rb[1::2], yo[i], io[i])


@compiled(parallel_min=_PAR)
def _train_pool_planes(x3, x, yp, idx, gamma, beta, mean, invstd, rmean, rvar, momentum, eps, s):
    # x (N, C, H, W) and x3, its (N, C, H*W) view; yp, idx (N, C, H // 2, W // 2). Thread owns
    # channel c: yp[:, c], idx[:, c], mean[c], invstd[c], rmean[c], rvar[c]. Each plane is
    # normalised whole into a buffer (one long vectorised loop: row by row, the 14- and 28-long
    # loops and their scalar remainders took 1.4x as long), then pooled from it.
    n, nc, h, w = x.shape
    oh, ow = yp.shape[2], yp.shape[3]
    neg = x.dtype.type(s)
    for c in prange(nc):
        _plane_stats(x3, c, eps, mean, invstd, rmean, rvar, momentum)
        hi, lo, a = _affine(x, c, mean, invstd, gamma)
        b = beta[c]
        flat = np.empty(h * w, x.dtype)
        for i0 in range(n):
            _normalise(x3[i0, c], flat, hi, lo, a, b, neg)
            _pool2x2(flat, w, yp[i0, c], idx[i0, c])


# The first argument is the pooled gradient, a quarter of the input the work scales with.
@compiled(parallel_min=_PAR // 4)
def _backward_pool_planes(grad, idx, yp, x, x3, gamma, mean, invstd, s, need_dx, dgamma, dbeta,
                          dx, dx3):
    # grad, idx, yp (N, C, OH, OW): the pooled gradient, winners and values; x, dx (N, C, H, W),
    # x3, dx3 their (N, C, H*W) views. Thread owns channel c: dx[:, c], dgamma[c], dbeta[c]. dx is
    # written a whole plane per loop (row by row, 14 long, took 1.15x as long), then the winners'
    # terms are added.
    n, nc, h, w = x.shape
    oh, ow = grad.shape[2], grad.shape[3]
    dt = x.dtype.type
    zero = dt(0)
    neg = dt(s)
    for c in prange(nc):
        hi, lo, _ = _affine(x, c, mean, invstd, gamma)
        inv = dt(invstd[c])
        sg = 0.0
        sgh = 0.0
        for i0 in range(n):
            plane, gp, yo, io = x[i0, c], grad[i0, c], yp[i0, c], idx[i0, c]
            for i in range(oh):
                for j in range(ow):
                    k = io[i, j]
                    g = _vmath.leaky_grad(gp[i, j], yo[i, j], neg)
                    sg += np.float64(g)
                    sgh += np.float64(g * (plane[2 * i + k // 2, 2 * j + k % 2] - hi))
        k0, ca, cb = _grad_coeffs(x, c, sg, sgh, lo, gamma, invstd, True, dgamma, dbeta)
        if need_dx:
            for i0 in range(n):
                xr, orow = x3[i0, c], dx3[i0, c]
                for q in range(xr.size):
                    orow[q] = k0 * (zero - ca - ((xr[q] - hi) - lo) * inv * cb)
                out = dx[i0, c]
                gp, yo, io = grad[i0, c], yp[i0, c], idx[i0, c]
                for i in range(oh):
                    for j in range(ow):
                        k = io[i, j]
                        g = _vmath.leaky_grad(gp[i, j], yo[i, j], neg)
                        out[2 * i + k // 2, 2 * j + k % 2] += k0 * g


# ------------------------------------------------------------------------------ public entry points

def _planes(a):
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
        _train_planes(_planes(x), _planes(y), gamma, beta, mean, invstd, running_mean, running_var,
                      float(momentum), float(eps), s)
    return y, mean, invstd


def batchnorm_eval_forward(x, gamma, beta, running_mean, running_var, eps, act, slope):
    mean = running_mean.astype(np.float64)
    invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    y = np.empty_like(x)
    s = negative_scale(act, slope)
    if x.ndim == 2:
        hi, lo = _split(mean, x.dtype)
        a = (invstd.astype(x.dtype) * gamma).astype(x.dtype)
        _eval_rows(x, y, hi, lo, a, beta, s)
    else:
        _eval_planes(_planes(x), _planes(y), gamma, beta, mean, invstd, s)
    return y, mean, invstd


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
        _backward_planes(_planes(grad), _planes(x), _planes(y), gamma, mean, invstd, s,
                         bool(batch_stats), bool(need_dx), dgamma, dbeta,
                         _planes(dx) if need_dx else dx.reshape(1, 1, 1))
    return dx if need_dx else None


def batchnorm_maxpool_train_forward(x, gamma, beta, running_mean, running_var, momentum, eps, act,
                                    slope):
    n, nc, h, w = x.shape
    y = np.empty((n, nc, h // 2, w // 2), x.dtype)
    idx = np.empty(y.shape, np.uint8)
    mean = np.empty(nc, np.float64)
    invstd = np.empty(nc, np.float64)
    _train_pool_planes(_planes(x), x, y, idx, gamma, beta, mean, invstd, running_mean,
                       running_var, float(momentum), float(eps), negative_scale(act, slope))
    return y, idx, mean, invstd


def batchnorm_maxpool_backward(grad, idx, pooled, x, gamma, mean, invstd, act, slope, dgamma,
                               dbeta, need_dx):
    dx = np.empty_like(x) if need_dx else np.empty((1, 1, 1, 1), x.dtype)
    _backward_pool_planes(grad, idx, pooled, x, _planes(x), gamma, mean, invstd,
                          negative_scale(act, slope), bool(need_dx), dgamma, dbeta, dx, _planes(dx))
    return dx if need_dx else None


register("batchnorm_train_forward", batchnorm_train_forward, batchnorm_train_forward_np)
register("batchnorm_eval_forward", batchnorm_eval_forward, batchnorm_eval_forward_np)
register("batchnorm_backward", batchnorm_backward, batchnorm_backward_np)
register("batchnorm_maxpool_train_forward", batchnorm_maxpool_train_forward,
         batchnorm_maxpool_train_forward_np)
register("batchnorm_maxpool_backward", batchnorm_maxpool_backward, batchnorm_maxpool_backward_np)
