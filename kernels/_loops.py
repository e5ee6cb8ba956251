"""Inner-loop helpers that kernels of several files compile into their own code: the direct
convolution's multiply-adds (kernels/conv.py, kernels/convbn.py), the 2x2 max-pool selects
(kernels/batchnorm_pool.py, kernels/convbn.py) and the per-plane batch-norm passes
(kernels/batchnorm.py, kernels/batchnorm_pool.py).

Numba's cache checks only the source file of the kernel it caches, so kernels/_registry.py tags
every build with this file's source (as with kernels/_vmath.py): a change here recompiles them.
"""
import numpy as np
from numba import njit

from kernels import _vmath
from kernels._registry import OPTIONS

# The plane loops of the direct convolutions run over a whole number of 8-float vectors (AVX2
# width): LLVM runs a remainder as scalar code. The extra steps read zero slack after each plane
# and land in discarded columns.
VEC = 8
SPAN = 512  # plane positions the (N, C, S) batch-norm passes sum at once (float64 accumulators)


# ------------------------------------------------------------------------ direct convolution

@njit(inline="always", **OPTIONS)
def fma4x3(a0, a1, a2, a3, s0, s1, s2, k0, k1, k2, k3, t, length):
    # a_r[j] += k_r[t] s0[j] + k_r[t + 1] s1[j] + k_r[t + 2] s2[j], r = 0..3, j < length: three
    # taps into four output channels. Each accumulator is loaded and stored once per 3
    # multiply-adds and each input vector feeds 4 channels. Written a = a + w v + w v + w v, it is
    # 3 chained FMAs (a += (w v + w v + w v) would be a multiply, 2 FMAs and an add).
    w00, w01, w02 = k0[t], k0[t + 1], k0[t + 2]
    w10, w11, w12 = k1[t], k1[t + 1], k1[t + 2]
    w20, w21, w22 = k2[t], k2[t + 1], k2[t + 2]
    w30, w31, w32 = k3[t], k3[t + 1], k3[t + 2]
    for j in range(length):
        v0, v1, v2 = s0[j], s1[j], s2[j]
        a0[j] = a0[j] + w00 * v0 + w01 * v1 + w02 * v2
        a1[j] = a1[j] + w10 * v0 + w11 * v1 + w12 * v2
        a2[j] = a2[j] + w20 * v0 + w21 * v1 + w22 * v2
        a3[j] = a3[j] + w30 * v0 + w31 * v1 + w32 * v2


@njit(inline="always", **OPTIONS)
def fma4x1(a0, a1, a2, a3, s, w0, w1, w2, w3, length):
    # a_r[j] += w_r s[j], r = 0..3, j < length: one tap into four output channels.
    for j in range(length):
        v = s[j]
        a0[j] += w0 * v
        a1[j] += w1 * v
        a2[j] += w2 * v
        a3[j] += w3 * v

# ------------------------------------------------------------------------ 2x2 max pooling

@njit(**OPTIONS)
def nan_last(v0, v1, v2, v3, best, k):
    # The window's value and position under max_pool2d's rule when the window's sum is NaN: the
    # last NaN if there is one (else the sum overflowed to inf - inf: keep the first maximum).
    for t, v in enumerate((v0, v1, v2, v3)):
        if v != v:
            best, k = v, t
    return best, k


@njit(inline="always", **OPTIONS)
def max4(a0, a1, a2, a3):
    # A 2x2 window's maximum and its position 0-3 (values in scan order): the first strict
    # maximum, as selects (no branch, so loops over windows vectorise). NaN: see nan_last.
    m01 = a1 > a0
    b01 = a1 if m01 else a0
    k01 = np.uint8(1) if m01 else np.uint8(0)
    m2 = a2 > b01
    b2 = a2 if m2 else b01
    k2 = np.uint8(2) if m2 else k01
    m3 = a3 > b2
    return (a3 if m3 else b2), (np.uint8(3) if m3 else k2)


@njit(inline="always", **OPTIONS)
def max4_row(v0, v1, v2, v3, yrow, irow):
    # One row of 2x2 windows whose values, in scan order, are v0[j], v1[j], v2[j], v3[j]: yrow[j]
    # and irow[j] get the window's maximum and its position (max4); a window with a NaN is seen
    # in its sum and counted, and the row is then redone under PyTorch's rule (nan_last).
    nans = 0
    for j in range(yrow.size):
        a0, a1, a2, a3 = v0[j], v1[j], v2[j], v3[j]
        yrow[j], irow[j] = max4(a0, a1, a2, a3)
        total = (a0 + a1) + (a2 + a3)
        nans += total != total
    if nans:
        for j in range(yrow.size):
            a0, a1, a2, a3 = v0[j], v1[j], v2[j], v3[j]
            total = (a0 + a1) + (a2 + a3)
            if total != total:
                yrow[j], irow[j] = nan_last(a0, a1, a2, a3, yrow[j], irow[j])


@njit(inline="always", **OPTIONS)
def pool2x2(buf, wp, yo, io):
    # 2x2 max pooling (stride 2) of a plane stored row after row, Wp values a row, in the flat
    # buffer buf, into yo, io (OH // 2, OW // 2).
    oh, ow = yo.shape
    for i in range(oh):
        ra, rb = buf[2 * i * wp:2 * i * wp + 2 * ow], buf[(2 * i + 1) * wp:(2 * i + 1) * wp + 2 * ow]
        max4_row(ra[0::2], ra[1::2], rb[0::2], rb[1::2], yo[i], io[i])

# ------------------------------------------------------------------------ batch-norm planes

@njit(**OPTIONS)
def plane_sums(x, c, sh, a1, a2):
    # Sum of d and d^2 over channel c of x (N, C, S), d = x - sh, in float64. The sums
    # run "vertically": a1[k], a2[k] accumulate position k of a span of the plane over the N planes,
    # so the inner loop carries no dependence and vectorises (a running scalar sum would not).
    # Four planes go at a time, so the accumulators are loaded and stored once per four values.
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
def normalise(p, o, hi, lo, a, b, s):
    # o = act(((p - hi) - lo) * a + b) over a contiguous vector; s: see the header.
    for k in range(p.size):
        z = ((p[k] - hi) - lo) * a + b
        o[k] = _vmath.leaky(z, s)


@njit(**OPTIONS)
def channel_stats(s1, s2, shift, m, eps, c, mean, invstd, rmean, rvar, momentum):
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
def plane_stats(x, c, eps, mean, invstd, rmean, rvar, momentum):
    # Channel c's batch statistics over x (N, C, S): plane_sums shifted by its first value, then
    # channel_stats (mean, invstd and the running statistics of channel c).
    ns = x.shape[2]
    sh = np.float64(x[0, c, 0])
    a1 = np.empty(min(ns, SPAN), np.float64)
    a2 = np.empty(min(ns, SPAN), np.float64)
    s1, s2 = plane_sums(x, c, sh, a1, a2)
    channel_stats(s1, s2, sh, x.size // x.shape[1], eps, c, mean, invstd, rmean, rvar, momentum)


@njit(**OPTIONS)
def channel_affine(x, c, mean, invstd, gamma):
    # Channel c's float64 mean split into hi + lo in x's dtype (see the header), and the scale
    # a = invstd * gamma: the constants of normalise.
    dt = x.dtype.type
    hi = dt(mean[c])
    return hi, dt(mean[c] - hi), dt(invstd[c]) * gamma[c]


@njit(**OPTIONS)
def grad_coeffs(x, c, sg, sgh, lo, gamma, invstd, batch_stats, dgamma, dbeta):
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
