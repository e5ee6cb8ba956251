"""BatchNorm2d (batch statistics) + ReLU/LeakyReLU + 2x2 max pooling (stride 2, no padding), fused
for training, as Sequential(BatchNorm2d, ReLU, MaxPool2d(2)) runs it (fastlayers/fused.py).

    x, dx            (N, C, H, W) C-contiguous
    pooled, idx, grad (N, C, H // 2, W // 2); idx uint8: the winner's position 2 ky + kx
    gamma, beta, running_mean/var, mean, invstd, dgamma, dbeta: as kernels/batchnorm.py

    forward:   the statistics pass of kernels/batchnorm.py, then one pass that normalises each plane
               (with the activation) into a plane-sized buffer that stays in L1, and keeps only
               each 2x2 window's maximum and its position (the first maximum in scan order, a NaN
               wins, the last NaN if several: PyTorch's max_pool2d rule). The full-size activation
               is never written to memory.
    backward:  only a window's winner has a gradient, g' = grad * act'(pooled), so the two sums run
               over the winners alone; dx = gamma * invstd * (g' - (sum(g') + xhat sum(g' xhat)) / M)
               is written in one pass over x (g' = 0 away from the winners).

Synchronised batch norm (SyncBatchNorm over the ranks' global batch) splits both passes where the
ranks exchange sums: the statistics come from kernels/batchnorm.py's batchnorm_stats, then
batchnorm_maxpool_apply_forward normalises and pools with the global mean and invstd; back,
batchnorm_maxpool_backward with need_dx False gives the local sums (into float64 dgamma, dbeta),
then batchnorm_maxpool_input_grad writes dx with the global means of g' and g' xhat.

The activation must be non-decreasing (s >= 0) so that pooling its output picks the same input as
pooling before it would; a pooled value > 0 then means the winner's pre-activation was > 0.
A thread owns channel c and walks its N planes.
"""
import numpy as np
from numba import prange

from kernels import _loops, _vmath
from kernels._registry import compiled, register
from kernels.batchnorm import (PAR_MIN, planes, batchnorm_apply_forward_np, batchnorm_backward_np,
                               batchnorm_input_grad_np, batchnorm_train_forward_np, negative_scale)
from kernels.pool import maxpool2d_backward_np, maxpool2d_forward_np


# ----------------------------------------------------------------------------------------- NumPy twins

def batchnorm_maxpool_train_forward_np(x, gamma, beta, running_mean, running_var, momentum, eps,
                                       act, slope):
    y, mean, invstd = batchnorm_train_forward_np(x, gamma, beta, running_mean, running_var,
                                                 momentum, eps, act, slope)
    return _pool_np(y) + (mean, invstd)


def _pool_np(y):
    pooled, flat = maxpool2d_forward_np(y, (2, 2), (2, 2), (0, 0))
    row, col = np.divmod(flat, y.shape[3])
    return pooled, (2 * (row % 2) + col % 2).astype(np.uint8)


def _dense_np(grad, idx, pooled, shape):
    """The full-size gradient and activation, nonzero at the winners only (where the gradient
    is)."""
    oh, ow = grad.shape[2:]
    code = idx.astype(np.int64)
    flat = ((2 * np.arange(oh)[:, None] + code // 2) * shape[3]
            + 2 * np.arange(ow)[None, :] + code % 2)
    return maxpool2d_backward_np(grad, flat, shape), maxpool2d_backward_np(pooled, flat, shape)


def batchnorm_maxpool_backward_np(grad, idx, pooled, x, gamma, mean, invstd, act, slope, dgamma,
                                  dbeta, need_dx):
    dense_grad, dense_y = _dense_np(grad, idx, pooled, x.shape)
    return batchnorm_backward_np(dense_grad, x, dense_y, gamma, mean, invstd, act, slope, True,
                                 dgamma, dbeta, need_dx)


def batchnorm_maxpool_apply_forward_np(x, gamma, beta, mean, invstd, act, slope):
    return _pool_np(batchnorm_apply_forward_np(x, gamma, beta, mean, invstd, act, slope))


def batchnorm_maxpool_input_grad_np(grad, idx, pooled, x, gamma, mean, invstd, act, slope, mean_g,
                                    mean_gx):
    dense_grad, dense_y = _dense_np(grad, idx, pooled, x.shape)
    return batchnorm_input_grad_np(dense_grad, x, dense_y, gamma, mean, invstd, act, slope, mean_g,
                                   mean_gx)


# ---------------------------------------------------------------------------------------- Numba kernels

@compiled(parallel_min=PAR_MIN)
def _train_pool_planes(x3, x, yp, idx, gamma, beta, mean, invstd, rmean, rvar, momentum, eps, s,
                       given):
    # x (N, C, H, W) and x3, its (N, C, H*W) view; yp, idx (N, C, H // 2, W // 2). Thread owns
    # channel c: yp[:, c], idx[:, c], mean[c], invstd[c], rmean[c], rvar[c]. Each plane is
    # normalised whole into a buffer (one long vectorised loop, not short rows with scalar
    # remainders), then pooled from it. given: mean and invstd are given (no statistics pass).
    n, nc, h, w = x.shape
    oh, ow = yp.shape[2], yp.shape[3]
    neg = x.dtype.type(s)
    for c in prange(nc):
        if not given:
            _loops.plane_stats(x3, c, eps, mean, invstd, rmean, rvar, momentum)
        hi, lo, a = _loops.channel_affine(x, c, mean, invstd, gamma)
        b = beta[c]
        flat = np.empty(h * w, x.dtype)
        for i0 in range(n):
            _loops.normalise(x3[i0, c], flat, hi, lo, a, b, neg)
            _loops.pool2x2(flat, w, yp[i0, c], idx[i0, c])


# The first argument is the pooled gradient, a quarter of the input the work scales with.
@compiled(parallel_min=PAR_MIN // 4)
def _backward_pool_planes(grad, idx, yp, x, x3, gamma, mean, invstd, s, need_dx, dgamma, dbeta,
                          dx, dx3, given, mean_g, mean_gx):
    # grad, idx, yp (N, C, OH, OW): the pooled gradient, winners and values; x, dx (N, C, H, W),
    # x3, dx3 their (N, C, H*W) views. Thread owns channel c: dx[:, c], dgamma[c], dbeta[c]. dx is
    # written a whole plane per loop (not row by row, 14 long), then the winners' terms are added.
    # given: the channel means of g' and g' xhat are mean_g, mean_gx (no sums, dgamma, dbeta).
    n, nc, h, w = x.shape
    oh, ow = grad.shape[2], grad.shape[3]
    dt = x.dtype.type
    zero = dt(0)
    neg = dt(s)
    for c in prange(nc):
        hi, lo, _ = _loops.channel_affine(x, c, mean, invstd, gamma)
        inv = dt(invstd[c])
        if given:
            k0, ca, cb = dt(gamma[c] * invstd[c]), dt(mean_g[c]), dt(mean_gx[c])
        else:
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
            k0, ca, cb = _loops.grad_coeffs(x, c, sg, sgh, lo, gamma, invstd, True, dgamma,
                                            dbeta)
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

def batchnorm_maxpool_train_forward(x, gamma, beta, running_mean, running_var, momentum, eps, act,
                                    slope):
    n, nc, h, w = x.shape
    y = np.empty((n, nc, h // 2, w // 2), x.dtype)
    idx = np.empty(y.shape, np.uint8)
    mean = np.empty(nc, np.float64)
    invstd = np.empty(nc, np.float64)
    _train_pool_planes(planes(x), x, y, idx, gamma, beta, mean, invstd, running_mean,
                       running_var, float(momentum), float(eps), negative_scale(act, slope), False)
    return y, idx, mean, invstd


def batchnorm_maxpool_apply_forward(x, gamma, beta, mean, invstd, act, slope):
    """(pooled, idx) of act(gamma (x - mean) invstd + beta) with given float64 statistics."""
    n, nc, h, w = x.shape
    y = np.empty((n, nc, h // 2, w // 2), x.dtype)
    idx = np.empty(y.shape, np.uint8)
    empty = np.empty(0, x.dtype)
    _train_pool_planes(planes(x), x, y, idx, gamma, beta, mean, invstd, empty, empty, 0.0, 0.0,
                       negative_scale(act, slope), True)
    return y, idx


_NO_MEANS = np.empty(0, np.float64)


def batchnorm_maxpool_backward(grad, idx, pooled, x, gamma, mean, invstd, act, slope, dgamma,
                               dbeta, need_dx):
    dx = np.empty_like(x) if need_dx else np.empty((1, 1, 1, 1), x.dtype)
    _backward_pool_planes(grad, idx, pooled, x, planes(x), gamma, mean, invstd,
                          negative_scale(act, slope), bool(need_dx), dgamma, dbeta, dx, planes(dx),
                          False, _NO_MEANS, _NO_MEANS)
    return dx if need_dx else None


def batchnorm_maxpool_input_grad(grad, idx, pooled, x, gamma, mean, invstd, act, slope, mean_g,
                                 mean_gx):
    """dx of the fused backward with the channel means of g' and g' xhat given (float64 (C,),
    over the global batch)."""
    dx = np.empty_like(x)
    scratch = np.zeros(x.shape[1], np.float64)
    _backward_pool_planes(grad, idx, pooled, x, planes(x), gamma, mean, invstd,
                          negative_scale(act, slope), True, scratch, scratch, dx, planes(dx), True,
                          mean_g, mean_gx)
    return dx


register("batchnorm_maxpool_train_forward", batchnorm_maxpool_train_forward,
         batchnorm_maxpool_train_forward_np)
register("batchnorm_maxpool_backward", batchnorm_maxpool_backward, batchnorm_maxpool_backward_np)
register("batchnorm_maxpool_apply_forward", batchnorm_maxpool_apply_forward,
         batchnorm_maxpool_apply_forward_np)
register("batchnorm_maxpool_input_grad", batchnorm_maxpool_input_grad,
         batchnorm_maxpool_input_grad_np)
