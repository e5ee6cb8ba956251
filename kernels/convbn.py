"""A network's first block fused for training: Conv2d (stride 1) + BatchNorm2d (batch statistics)
+ ReLU/LeakyReLU + MaxPool2d(2), as Sequential(Conv2d, BatchNorm2d, ReLU, MaxPool2d(2)) runs it when
the convolution's input needs no gradient (it is the data).

    x (N, C, H, W)   w (O, C, KH, KW)   b (O,) or None   gamma, beta (O,) x's dtype
    pooled, idx, grad (N, O, OH // 2, OW // 2)   OH, OW: the stride-1 convolution's output size
    mean, invstd (O,) float64: the batch statistics of the convolution's output z
    dw, db, dgamma, dbeta: accumulated into (+=)

z is never written to memory, in either direction. Write p for the K = C KH KW input values under
the kernel at one output position (a column of im2col, zero padding included), so that
z_o = w_o . p + b_o, and M = N OH OW for the number of positions.

Forward. BatchNorm's statistics of z are those of a linear function of p:
    mean_o = w_o . mu + b_o,    var_o = w_o^T Cov w_o        (biased, as BatchNorm normalises)
mu and Cov, the mean and covariance of p over the M positions, are shared by every output channel
and come from one "moments" pass over the input (K (K + 1) / 2 products a position: 45 for a 3x3
kernel on one channel). The normalisation then folds into the convolution's weights:
    v_o = gamma_o invstd_o (z_o - mean_o) + beta_o = (a_o w_o) . (p - mu) + beta_o,
    a_o = gamma_o invstd_o,
so one pass computes v with a direct convolution loop (kernels/_loops.py's fma4x3), applies the
activation and keeps each 2x2 window's maximum and its position under max_pool2d's rules
(kernels/_loops.py's max4 and nan_last; idx uint8 = 2 ky + kx).

Backward. Only a window's winner has a gradient, g' = grad * act'(pooled). With its sums over the
winners of each channel,
    sg_o = sum g',    sgp_o = sum g' (p - mu)                                   (a K-vector)
BatchNorm's backward (dz = a_o (g' - (sg_o + xhat sgx_o) / M), xhat = (z - mean) invstd) followed by
the convolution's weight gradient (dw_o = sum dz p) reduce to
    dbeta_o += sg_o,    dgamma_o += sgx_o = sum g' xhat = invstd_o w_o . sgp_o
    dw_o    += a_o (sgp_o - sgx_o invstd_o Cov w_o)
    db_o    += 0      (BatchNorm's output does not change when z shifts, so the bias before it has
                       no gradient; PyTorch's is 0 up to rounding)
The full-size gradient of z is never formed.

Synchronised batch norm (SyncBatchNorm, statistics over the ranks' global batch) splits the block
where the ranks exchange sums. Forward: conv_bn_maxpool_stats gives each output channel's local
count, mean and sum of squared deviations (from the moments pass, as above); with the global mean
and invstd, conv_bn_maxpool_apply_forward folds them into the weights,
    c4_o = beta_o + a_o (w_o . shift + b_o - mean_o)        (= beta_o - a_o w_o . mu for one rank)
and runs the same pass. Backward: conv_bn_maxpool_grad_sums gives the local sg_o and
sgx_o = invstd_o (w_o . sgp_o - sg_o w_o . mu) (sgp uncentred; w_o . mu = mean_o - b_o - w_o . shift
needs only the global mean); with the global sums, conv_bn_maxpool_sync_backward adds this rank's
share of the weight gradient, dz summed over its own positions only:
    dw_o += a_o (sgp_o - mean_g_o P - mean_gx_o invstd_o (S w_o - P w_o . mu)) + shift sum(dz_o)
P = sum p and S = sum p p^T over the rank's positions (the moments pass's totals),
mean_g = sum g' / M and mean_gx = sum g' xhat / M over the global batch; the last term undoes the
rank's own shift of p, as a rank's dz do not sum to zero (all ranks' do). For one rank this is the
formula above (P = M mu, S - P mu^T = M Cov, sum dz = 0).

Layout: the input is split into its four phases (even/odd rows x even/odd columns of the padded
plane, each on a grid Wq = ceil(Wp / 2) wide). Output pixel (2 i + a, 2 j + b), the (a, b) member
of pooling window (i, j), reads tap (ky, kx) from phase ((a + ky dh) % 2, (b + kx dw) % 2) at
(i, j) + ((a + ky dh) // 2, (b + kx dw) // 2): a contiguous slice, as in the flattened-plane trick
of kernels/conv.py. So v is computed one output phase at a time, a window's four values sit at the
same index of four rows, and pooling is one long vectorised loop (row by row, 14 windows long, it
did not vectorise and took twice as long). The backward lays g' out the same way (in the phase of
its winner, zeros elsewhere) and takes K x 4 dot products a plane.

Numerics: the input is shifted by a constant per channel (the first sample's mean), padding
included, before either pass: p - mu and Cov do not change, and the moments (summed per sample in
x's dtype, then in float64) do not cancel for data far from zero. a_o w_o and beta_o - a_o w_o . mu
are rounded to x's dtype once. Results match the unfused layers to float rounding: z is not rounded
before the statistics, and a window whose two largest values lie within rounding of each other may
pick the other one.
"""
import functools

import numba
import numpy as np
from numba import njit, prange

from kernels import _loops, _vmath
from kernels._registry import OPTIONS, compiled, register
from kernels.batchnorm import (_update_running_np, batchnorm_grad_sums_np, batchnorm_stats_np,
                               negative_scale)
from kernels.batchnorm_pool import (_dense_np, batchnorm_maxpool_apply_forward_np,
                                    batchnorm_maxpool_backward_np, batchnorm_maxpool_input_grad_np,
                                    batchnorm_maxpool_train_forward_np)
from kernels.conv import conv2d_backward_weight_np, conv2d_forward_np

# The moments pass sums this many samples into each partial sum, whatever the thread count, so
# the float64 totals (added in a fixed order) do not depend on it.
_MOMENT_SAMPLES = 4


# ----------------------------------------------------------------------------------------- NumPy twins
# The composition of the unfused layers' twins: the convolution, then BatchNorm2d + activation + max
# pooling; the backward recomputes nothing but keeps z (the twin is the reference, not the fast path).

def conv_bn_maxpool_train_forward_np(x, w, b, padding, dilation, gamma, beta, running_mean,
                                     running_var, momentum, eps, act, slope):
    z = conv2d_forward_np(x, w, b, (1, 1), padding, dilation)
    pooled, idx, mean, invstd = batchnorm_maxpool_train_forward_np(
        z, gamma, beta, running_mean, running_var, momentum, eps, act, slope)
    return pooled, idx, mean, invstd, (x, z, padding, dilation)


def conv_bn_maxpool_backward_np(grad, idx, pooled, saved, w, gamma, mean, invstd, act, slope, dw,
                                db, dgamma, dbeta):
    x, z, padding, dilation = saved
    dz = batchnorm_maxpool_backward_np(grad, idx, pooled, z, gamma, mean, invstd, act, slope,
                                       dgamma, dbeta, True)
    conv2d_backward_weight_np(dz, x, (1, 1), padding, dilation, dw, db)


def conv_bn_maxpool_stats_np(x, w, b, padding, dilation):
    z = conv2d_forward_np(x, w, b, (1, 1), padding, dilation)
    mean, m2 = batchnorm_stats_np(z)
    return z.size // z.shape[1], mean, m2, (x, z, padding, dilation)


def conv_bn_maxpool_apply_forward_np(prepared, w, b, gamma, beta, mean, invstd, act, slope):
    pooled, idx = batchnorm_maxpool_apply_forward_np(prepared[1], gamma, beta, mean, invstd, act,
                                                     slope)
    return pooled, idx, prepared


def conv_bn_maxpool_grad_sums_np(grad, idx, pooled, saved, w, b, gamma, mean, invstd, act, slope):
    z = saved[1]
    dense_grad, dense_y = _dense_np(grad, idx, pooled, z.shape)
    sum_g, sum_gx = batchnorm_grad_sums_np(dense_grad, z, dense_y, mean, invstd, act, slope)
    return sum_g, sum_gx, None


def conv_bn_maxpool_sync_backward_np(grad, idx, pooled, saved, partial, w, gamma, mean, invstd,
                                     act, slope, mean_g, mean_gx, dw):
    x, z, padding, dilation = saved
    dz = batchnorm_maxpool_input_grad_np(grad, idx, pooled, z, gamma, mean, invstd, act, slope,
                                         mean_g, mean_gx)
    conv2d_backward_weight_np(dz, x, (1, 1), padding, dilation, dw, np.zeros(w.shape[0], dw.dtype))


# ---------------------------------------------------------------------------------------- Numba kernels

@compiled(parallel_min=1 << 14)
def _split_phases(x, shift, xs, top, left, wq, size):
    # xs (N, C 4 size): sample n, channel c, phase (r, t) holds xp[2 u + r, 2 v + t] - shift[c] at
    # (c 4 + 2 r + t) size + u Wq + v, xp being x[n, c] zero-padded by (top, left); what lies outside
    # (the padding, and the slack past each plane) holds -shift[c]. Thread owns sample n of xs.
    n_, c_, h, w = x.shape
    for n in prange(n_):
        dst = xs[n]
        for c in range(c_):
            sh = shift[c]
            for j in range(c * 4 * size, (c + 1) * 4 * size):
                dst[j] = -sh
            src = x[n, c]
            for r in range(h):
                rr = top + r
                for q in range(w):
                    cc = left + q
                    dst[(c * 4 + 2 * (rr % 2) + cc % 2) * size + rr // 2 * wq + cc // 2] = \
                        src[r, q] - sh


@compiled(parallel_min=1 << 14, fastmath=("reassoc",))
def _moments(xs, offs, oh, ow, wq, part):
    # xs (N, C 4 size) phase-split samples; offs (4, K): where output phase q's tap k starts.
    # part (chunks, K + 1, K) float64: chunk t owns part[t] and samples t S .. t S + S - 1
    # (S = _MOMENT_SAMPLES): part[t, k, k2] = sum p_k p_k2 (k <= k2), part[t, K, k] = sum p_k, over
    # all OH OW positions (output phase q = 2 a + b covers rows 2 i + a < OH, columns 2 j + b < OW:
    # rows[q] x cols[q] of its grid). Per sample and phase, each tap's window is copied with its
    # columns past cols[q] zeroed (mk), so every sum is one long loop over the grid.
    n_, nk = xs.shape[0], offs.shape[1]
    rows = np.array([(oh + 1) // 2, (oh + 1) // 2, oh // 2, oh // 2])
    cols = np.array([(ow + 1) // 2, ow // 2, (ow + 1) // 2, ow // 2])
    span = ((rows[0] - 1) * wq + cols[0] + _loops.VEC - 1) // _loops.VEC * _loops.VEC
    zero = xs.dtype.type(0)
    for t in prange(part.shape[0]):
        acc = part[t]
        acc[:] = 0.0
        mk = np.empty((nk, span), xs.dtype)
        valid = np.empty((4, span), np.bool_)
        for q in range(4):
            for j in range(span):
                valid[q, j] = j % wq < cols[q]
        for n in range(t * _MOMENT_SAMPLES, min(n_, (t + 1) * _MOMENT_SAMPLES)):
            xf = xs[n]
            for q in range(4):
                if rows[q] == 0 or cols[q] == 0:
                    continue
                length = (rows[q] - 1) * wq + cols[q]
                vq = valid[q]
                for k in range(nk):
                    src, dst = xf[offs[q, k]:offs[q, k] + length], mk[k]
                    for j in range(length):
                        dst[j] = src[j] if vq[j] else zero
                for k in range(nk):
                    a = mk[k, :length]
                    s = zero
                    for j in range(length):
                        s += a[j]
                    acc[nk, k] += np.float64(s)
                    for k2 in range(k, nk):
                        bv = xf[offs[q, k2]:offs[q, k2] + length]
                        d = zero
                        for j in range(length):
                            d += a[j] * bv[j]
                        acc[k, k2] += np.float64(d)


@njit(inline="always", **OPTIONS)
def _taps4(xf, off, w4, c4, o0, acc, length):
    # acc[k, :length] = c4[o0 + k] + sum_t w4[o0 + k, t] xf[off[t] + j], k < 4: one output phase of
    # output channels o0 .. o0 + 3, taps three at a time (_loops.fma4x3, _loops.fma4x1).
    nk = off.size
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    b0, b1, b2, b3 = c4[o0], c4[o0 + 1], c4[o0 + 2], c4[o0 + 3]
    for j in range(length):
        a0[j] = b0
        a1[j] = b1
        a2[j] = b2
        a3[j] = b3
    k0, k1, k2, k3 = w4[o0], w4[o0 + 1], w4[o0 + 2], w4[o0 + 3]
    for t in range(0, nk - nk % 3, 3):
        _loops.fma4x3(a0, a1, a2, a3, xf[off[t]:off[t] + length], xf[off[t + 1]:off[t + 1] + length],
                xf[off[t + 2]:off[t + 2] + length], k0, k1, k2, k3, t, length)
    for t in range(nk - nk % 3, nk):
        _loops.fma4x1(a0, a1, a2, a3, xf[off[t]:off[t] + length], k0[t], k1[t], k2[t], k3[t], length)


@compiled(parallel_min=1 << 12, fastmath=("contract", "reassoc"))
def _forward_phases(xs, offs, w4, c4, wq, s, pooled, idx, nchunk):
    # xs (N, C 4 size) phase-split samples; offs (4, K); w4 (O4, K), c4 (O4,): the folded weights
    # and constants (see the header), O rounded up to a multiple of 4 with zero rows; pooled, idx
    # (N, O, PH, PW). A thread owns a chunk of samples: pooled[n], idx[n]. v is computed phase by
    # phase (acc[q, k] holds rows 2 i + a, columns 2 j + b of channel o0 + k, q = 2 a + b, on a
    # grid Wq wide), so a window's four values sit at the same index of four rows and the
    # activation and pooling run as one long loop over the grid (row by row, 14 windows long, the
    # loop did not vectorise and took twice as long); the rows are then copied out.
    n_, o_, ph, pw = pooled.shape
    length = ((ph - 1) * wq + pw + _loops.VEC - 1) // _loops.VEC * _loops.VEC
    neg = pooled.dtype.type(s)
    zero = pooled.dtype.type(0)
    for chunk in prange(nchunk):
        acc = np.empty((4, 4, length), dtype=pooled.dtype)
        by = np.empty(length, dtype=pooled.dtype)
        bk = np.empty(length, dtype=np.uint8)
        for n in range(chunk * n_ // nchunk, (chunk + 1) * n_ // nchunk):
            xf = xs[n]
            for o0 in range(0, o_, 4):
                for q in range(4):
                    _taps4(xf, offs[q], w4, c4, o0, acc[q], length)
                for k in range(min(4, o_ - o0)):
                    v0, v1, v2, v3 = acc[0, k], acc[1, k], acc[2, k], acc[3, k]
                    check = zero
                    for j in range(length):
                        a0, a1 = _vmath.leaky(v0[j], neg), _vmath.leaky(v1[j], neg)
                        a2, a3 = _vmath.leaky(v2[j], neg), _vmath.leaky(v3[j], neg)
                        by[j], bk[j] = _loops.max4(a0, a1, a2, a3)
                        check += (a0 + a1) + (a2 + a3)
                    yo, io = pooled[n, o0 + k], idx[n, o0 + k]
                    for i in range(ph):
                        yrow, irow = yo[i], io[i]
                        for j in range(pw):
                            yrow[j] = by[i * wq + j]
                            irow[j] = bk[i * wq + j]
                    if check != check:   # a NaN somewhere (or inf - inf): redo its windows
                        for i in range(ph):
                            for j in range(pw):
                                t = i * wq + j
                                a0, a1 = _vmath.leaky(v0[t], neg), _vmath.leaky(v1[t], neg)
                                a2, a3 = _vmath.leaky(v2[t], neg), _vmath.leaky(v3[t], neg)
                                total = (a0 + a1) + (a2 + a3)
                                if total != total:
                                    yo[i, j], io[i, j] = _loops.nan_last(a0, a1, a2, a3, yo[i, j],
                                                                   io[i, j])


@njit(**OPTIONS)
def _fold(part, shift, w, gamma, beta, eps, m, w4, c4, mu, cov):
    # The batch statistics of z from the moments pass's partial sums (see the header), without the
    # conv bias: returns (mean - b, var, invstd) per output channel, and fills mu, cov (float64, p
    # shifted) and the folded weights w4 = a w, constants c4 = beta - a w . mu (x's dtype; w4 rows
    # and c4 past O stay zero). w (O, K); tap k reads input channel k // (K / C).
    _moment_stats(_total(part), m, mu, cov)
    return _fold_with(mu, cov, shift, w, gamma, beta, eps, w4, c4)


@njit(**OPTIONS)
def _total(part):
    # The moments pass's partial sums added in chunk order: (K + 1, K).
    total = part[0].copy()
    for t in range(1, part.shape[0]):
        total += part[t]
    return total


@njit(**OPTIONS)
def _moment_stats(total, m, mu, cov):
    # mu, cov (float64, p shifted) of the M = m positions from the moments' totals.
    nk = mu.size
    for k in range(nk):
        mu[k] = total[nk, k] / m
    for k in range(nk):
        for k2 in range(k, nk):
            cov[k, k2] = total[k, k2] / m - mu[k] * mu[k2]
            cov[k2, k] = cov[k, k2]


@njit(**OPTIONS)
def _fold_with(mu, cov, shift, w, gamma, beta, eps, w4, c4):
    # _fold's per-channel statistics and folded weights from mu and cov.
    nk = mu.size
    o_ = w.shape[0]
    per = nk // shift.size
    mean = np.zeros(o_)
    var = np.zeros(o_)
    invstd = np.empty(o_)
    for o in range(o_):
        wo = w[o].astype(np.float64)
        wmu = 0.0
        for k in range(nk):
            wmu += wo[k] * mu[k]
            mean[o] += wo[k] * (mu[k] + np.float64(shift[k // per]))
            for k2 in range(nk):
                var[o] += wo[k] * cov[k, k2] * wo[k2]
        var[o] = max(var[o], 0.0)
        invstd[o] = 1.0 / np.sqrt(var[o] + eps)
        a = np.float64(gamma[o]) * invstd[o]   # as the backward computes it
        for k in range(nk):
            w4[o, k] = a * wo[k]
        c4[o] = np.float64(beta[o]) - a * wmu
    return mean, var, invstd


@njit(inline="always", **OPTIONS)
def _windows4(xf, offs, t, length):
    # Tap t's windows in the four phases of a phase-split sample xf.
    return (xf[offs[0, t]:offs[0, t] + length], xf[offs[1, t]:offs[1, t] + length],
            xf[offs[2, t]:offs[2, t] + length], xf[offs[3, t]:offs[3, t] + length])


@njit(fastmath={"reassoc"}, **OPTIONS)
def _channel_sums(grad, idx, pooled, at, xs, offs, length, neg, o, gq, sgp):
    # _backward_sums' work for output channel o: adds sum g' p_k into sgp[k] and returns sum g'.
    # gq (4 length) starts and ends zero. A function of its own, called by both builds of
    # _backward_sums, so that both run the one compiled (and vectorised) copy of its dot products:
    # with "reassoc" LLVM picks their summation order per copy, and two copies may round apart.
    n_, m = grad.shape[0], grad.shape[2]
    nk = offs.shape[1]
    zero = grad.dtype.type(0)
    g0, g1 = gq[:length], gq[length:2 * length]
    g2, g3 = gq[2 * length:3 * length], gq[3 * length:]
    sg = 0.0
    for n in range(n_):
        gp, yo, io = grad[n, o], pooled[n, o], idx[n, o]
        part = zero
        for t in range(m):
            g = _vmath.leaky_grad(gp[t], yo[t], neg)
            gq[io[t] * length + at[t]] = g
            part += g
        sg += np.float64(part)
        xf = xs[n]
        for t in range(0, nk - nk % 3, 3):   # three taps a loop: g' is loaded once for them
            a0, a1, a2, a3 = _windows4(xf, offs, t, length)
            b0, b1, b2, b3 = _windows4(xf, offs, t + 1, length)
            c0, c1, c2, c3 = _windows4(xf, offs, t + 2, length)
            da = zero
            db = zero
            dc = zero
            for j in range(length):
                h0, h1, h2, h3 = g0[j], g1[j], g2[j], g3[j]
                da += h0 * a0[j] + h1 * a1[j] + h2 * a2[j] + h3 * a3[j]
                db += h0 * b0[j] + h1 * b1[j] + h2 * b2[j] + h3 * b3[j]
                dc += h0 * c0[j] + h1 * c1[j] + h2 * c2[j] + h3 * c3[j]
            sgp[t] += np.float64(da)
            sgp[t + 1] += np.float64(db)
            sgp[t + 2] += np.float64(dc)
        for t in range(nk - nk % 3, nk):
            a0, a1, a2, a3 = _windows4(xf, offs, t, length)
            d = zero
            for j in range(length):
                d += g0[j] * a0[j] + g1[j] * a1[j] + g2[j] * a2[j] + g3[j] * a3[j]
            sgp[t] += np.float64(d)
        for j in range(gq.size):
            gq[j] = zero
    return sg


@compiled(parallel_min=1 << 12)
def _backward_sums(grad, idx, pooled, pw, xs, offs, wq, s, w, gamma, invstd, mu, cov, dw, dgamma,
                   dbeta, raw, sg_out, sgp_out):
    # grad, idx, pooled (N, O, PH PW), PW windows a row; xs (N, C 4 size), offs (4, K) as
    # _forward_phases; w, dw (O, K). Thread owns output channel o: from sg = sum g' and
    # sgp[k] = sum g' p_k over the winners it accumulates dgamma[o], dbeta[o] and dw[o] (the
    # header's formulas). A sample's g' is laid out as the forward's phases: gq[q] holds it at the
    # windows whose winner is q, zero elsewhere (and in the columns past PW), and a tap's sum is
    # then four dot products with the tap's phase windows, three taps a loop so that each g' is
    # loaded once for three taps. The buffer is cleared whole (one vectorised loop) after each
    # sample, cheaper than clearing the winners one by one (_channel_sums). raw: only
    # sg_out[o] = sg and sgp_out[o] = sgp (uncentred) are written (the synchronised backward
    # finishes). Compiled without "reassoc", so both builds sum the per-channel float64 totals in
    # the written order.
    o_, m = grad.shape[1], grad.shape[2]
    nk = offs.shape[1]
    length = ((m // pw - 1) * wq + pw + _loops.VEC - 1) // _loops.VEC * _loops.VEC
    neg = grad.dtype.type(s)
    at = np.empty(m, np.int64)   # window t = i PW + j sits at i Wq + j of a phase row
    for t in range(m):
        at[t] = t // pw * wq + t % pw
    for o in prange(o_):
        gq = np.zeros(4 * length, grad.dtype)
        sgp = np.zeros(nk, np.float64)
        sg = _channel_sums(grad, idx, pooled, at, xs, offs, length, neg, o, gq, sgp)
        if raw:
            sg_out[o] = sg
            for k in range(nk):
                sgp_out[o, k] = sgp[k]
        else:
            wo = w[o].astype(np.float64)
            sgx = 0.0
            for k in range(nk):
                sgp[k] -= sg * mu[k]
                sgx += wo[k] * sgp[k]
            sgx *= invstd[o]
            dgamma[o] += dgamma.dtype.type(sgx)
            dbeta[o] += dbeta.dtype.type(sg)
            a = np.float64(gamma[o]) * invstd[o]
            for k in range(nk):
                cw = 0.0
                for k2 in range(nk):
                    cw += cov[k, k2] * wo[k2]
                dw[o, k] += dw.dtype.type(a * (sgp[k] - sgx * invstd[o] * cw))


# ------------------------------------------------------------------------------ public entry points

def _geometry(x, w, padding, dilation):
    """The phase-split layout: (wq, plane size, offs (4, K), OH, OW)."""
    return _layout(x.shape[1:], w.shape[2:], tuple(map(int, padding)), tuple(map(int, dilation)))


@functools.lru_cache(maxsize=64)
def _layout(chw, khw, padding, dilation):
    # Cached: a training step calls it twice, and building offs costs about a twentieth of the
    # forward. offs is shared: never written to (it stays writeable: a read-only array slows the
    # backward).
    c, h, wd = chw
    kh, kw = khw
    (ph, pw), (dh, dw) = padding, dilation
    hp, wp = h + 2 * ph, wd + 2 * pw
    hq, wq = (hp + 1) // 2, (wp + 1) // 2
    size = (hq + 1) * wq + _loops.VEC
    offs = np.empty((4, c * kh * kw), np.int64)
    for q in range(4):
        rr = q // 2 + dh * np.arange(kh)[:, None]
        cc = q % 2 + dw * np.arange(kw)[None, :]
        within = (2 * (rr % 2) + cc % 2) * size + rr // 2 * wq + cc // 2
        offs[q] = (np.arange(c)[:, None, None] * (4 * size) + within).ravel()
    return wq, size, offs, hp - dh * (kh - 1), wp - dw * (kw - 1)


def _prepare(x, w, padding, dilation):
    """The phase-split shifted input and its moments: (xs, offs, wq, shift, part, oh, ow)."""
    n, c = x.shape[:2]
    nk = w[0].size
    wq, size, offs, oh, ow = _geometry(x, w, padding, dilation)
    shift = x[0].mean(axis=(1, 2), dtype=np.float64).astype(x.dtype)
    xs = np.empty((n, c * 4 * size), x.dtype)
    _split_phases(x, shift, xs, padding[0], padding[1], wq, size)
    part = np.empty((-(-n // _MOMENT_SAMPLES), nk + 1, nk), np.float64)
    _moments(xs, offs, oh, ow, wq, part)
    return xs, offs, wq, shift, part, oh, ow


def _pool_pass(xs, offs, w4, c4, wq, act, slope, n, o, oh, ow, dtype):
    pooled = np.empty((n, o, oh // 2, ow // 2), dtype)
    idx = np.empty(pooled.shape, np.uint8)
    _forward_phases(xs, offs, w4, c4, wq, negative_scale(act, slope), pooled, idx,
                    min(n, 2 * numba.get_num_threads()))   # any count gives the same result
    return pooled, idx


def conv_bn_maxpool_train_forward(x, w, b, padding, dilation, gamma, beta, running_mean,
                                  running_var, momentum, eps, act, slope):
    n = x.shape[0]
    o = w.shape[0]
    nk = w[0].size
    xs, offs, wq, shift, part, oh, ow = _prepare(x, w, padding, dilation)
    o4 = (o + 3) // 4 * 4
    w4 = np.zeros((o4, nk), x.dtype)
    c4 = np.zeros(o4, x.dtype)
    mu = np.empty(nk)
    cov = np.empty((nk, nk))
    m = n * oh * ow
    mean, var, invstd = _fold(part, shift, w.reshape(o, nk), gamma, beta, float(eps), float(m), w4,
                              c4, mu, cov)
    if b is not None:
        mean += b
    _update_running_np(running_mean, running_var, mean, var, m, momentum)
    pooled, idx = _pool_pass(xs, offs, w4, c4, wq, act, slope, n, o, oh, ow, x.dtype)
    return pooled, idx, mean, invstd, (xs, offs, wq, mu, cov)


def conv_bn_maxpool_backward(grad, idx, pooled, saved, w, gamma, mean, invstd, act, slope, dw, db,
                             dgamma, dbeta):
    xs, offs, wq, mu, cov = saved
    _sums(grad, idx, pooled, xs, offs, wq, act, slope, w, gamma, invstd, mu, cov, dw, dgamma,
          dbeta, False, _NONE1, _NONE2)


_NONE1 = np.empty(0, np.float64)
_NONE2 = np.empty((0, 0), np.float64)


def _sums(grad, idx, pooled, xs, offs, wq, act, slope, w, gamma, invstd, mu, cov, dw, dgamma,
          dbeta, raw, sg_out, sgp_out):
    n, o, ph, pw = grad.shape
    flat = (n, o, ph * pw)
    if not dw.flags.c_contiguous:   # the kernel adds into a (O, K) view of it
        raise ValueError("conv_bn_maxpool_backward: dw must be C-contiguous")
    _backward_sums(grad.reshape(flat), idx.reshape(flat), pooled.reshape(flat), pw, xs, offs, wq,
                   negative_scale(act, slope), w.reshape(o, -1), gamma, invstd, mu, cov,
                   dw.reshape(o, -1), dgamma, dbeta, raw, sg_out, sgp_out)


def _tap_shift(shift, nk):
    """The shift under each of the K taps (tap k reads input channel k // (K / C))."""
    return np.repeat(shift.astype(np.float64), nk // shift.size)


def conv_bn_maxpool_stats(x, w, b, padding, dilation):
    """This batch's (count, mean, m2) of each output channel of the convolution (with its bias),
    float64 (O,), and what conv_bn_maxpool_apply_forward takes."""
    n = x.shape[0]
    o, nk = w.shape[0], w[0].size
    xs, offs, wq, shift, part, oh, ow = _prepare(x, w, padding, dilation)
    m = n * oh * ow
    total = _total(part)
    mu = np.empty(nk)
    cov = np.empty((nk, nk))
    _moment_stats(total, float(m), mu, cov)
    ones = np.ones(o, x.dtype)
    mean, var, _ = _fold_with(mu, cov, shift, w.reshape(o, nk), ones, ones, 1.0,
                              np.zeros((o, nk), x.dtype), np.zeros(o, x.dtype))
    if b is not None:
        mean += b
    return m, mean, var * m, (xs, offs, wq, shift, total, oh, ow, n)


def conv_bn_maxpool_apply_forward(prepared, w, b, gamma, beta, mean, invstd, act, slope):
    """(pooled, idx, saved) of the block normalised with the given statistics of its output."""
    xs, offs, wq, shift, total, oh, ow, n = prepared
    o, nk = w.shape[0], w[0].size
    wo = w.reshape(o, nk).astype(np.float64)
    a = gamma.astype(np.float64) * invstd
    bias = 0.0 if b is None else b.astype(np.float64)
    o4 = (o + 3) // 4 * 4
    w4 = np.zeros((o4, nk), xs.dtype)
    c4 = np.zeros(o4, xs.dtype)
    w4[:o] = a[:, None] * wo
    c4[:o] = beta.astype(np.float64) + a * (wo @ _tap_shift(shift, nk) + bias - mean)
    pooled, idx = _pool_pass(xs, offs, w4, c4, wq, act, slope, n, o, oh, ow, xs.dtype)
    return pooled, idx, prepared


def conv_bn_maxpool_grad_sums(grad, idx, pooled, saved, w, b, gamma, mean, invstd, act, slope):
    """This batch's sum(g') and sum(g' xhat) of each output channel (float64 (O,)), and what
    conv_bn_maxpool_sync_backward takes."""
    xs, offs, wq, shift, total, oh, ow, n = saved
    o, nk = w.shape[0], w[0].size
    sg = np.empty(o)
    sgp = np.empty((o, nk))
    scratch = np.zeros(o, w.dtype)   # not written in this mode
    _sums(grad, idx, pooled, xs, offs, wq, act, slope, w, gamma, invstd, _NONE1, _NONE2,
          np.zeros((o, nk), w.dtype), scratch, scratch, True, sg, sgp)
    wo = w.reshape(o, nk).astype(np.float64)
    bias = 0.0 if b is None else b.astype(np.float64)
    w_mu = mean - bias - wo @ _tap_shift(shift, nk)     # w_o . mu, p shifted
    sgx = invstd * ((wo * sgp).sum(axis=1) - sg * w_mu)
    return sg, sgx, (sg, sgp, w_mu)


def conv_bn_maxpool_sync_backward(grad, idx, pooled, saved, partial, w, gamma, mean, invstd, act,
                                  slope, mean_g, mean_gx, dw):
    """Adds this rank's share of the weight gradient, given the global means of g' and g' xhat
    (the bias gradient is zero, as in conv_bn_maxpool_backward)."""
    xs, offs, wq, shift, total, oh, ow, n = saved
    sg, sgp, w_mu = partial
    o, nk = w.shape[0], w[0].size
    wo = w.reshape(o, nk).astype(np.float64)
    p_sum = total[nk]
    s_sum = np.triu(total[:nk])
    s_sum = s_sum + np.triu(s_sum, 1).T
    a = gamma.astype(np.float64) * invstd
    k = (mean_gx * invstd)[:, None]
    sw = wo @ s_sum - w_mu[:, None] * p_sum          # (S w_o - P w_o . mu), S symmetric
    g = sgp - mean_g[:, None] * p_sum - k * sw
    # p is shifted by this rank's shift, and this rank's dz do not sum to zero (the global ones
    # do): dw gets shift times their sum, sum dz = a (sg - mean_g m - mean_gx xhat-sum)
    m = n * oh * ow
    dz_sum = sg - mean_g * m - k[:, 0] * (wo @ p_sum - m * w_mu)
    g += dz_sum[:, None] * _tap_shift(shift, nk)[None, :]
    dw += (a[:, None] * g).reshape(dw.shape).astype(dw.dtype)


register("conv_bn_maxpool_train_forward", conv_bn_maxpool_train_forward,
         conv_bn_maxpool_train_forward_np)
register("conv_bn_maxpool_backward", conv_bn_maxpool_backward, conv_bn_maxpool_backward_np)
register("conv_bn_maxpool_stats", conv_bn_maxpool_stats, conv_bn_maxpool_stats_np)
register("conv_bn_maxpool_apply_forward", conv_bn_maxpool_apply_forward,
         conv_bn_maxpool_apply_forward_np)
register("conv_bn_maxpool_grad_sums", conv_bn_maxpool_grad_sums, conv_bn_maxpool_grad_sums_np)
register("conv_bn_maxpool_sync_backward", conv_bn_maxpool_sync_backward,
         conv_bn_maxpool_sync_backward_np)
