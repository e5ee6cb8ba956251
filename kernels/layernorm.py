"""Layer normalisation: the forward and the fused backward, one row (sample) at a time.

    x, y, grad, dx   (R, D) C-contiguous: R rows, each normalised over its D values
    weight, bias     (D,) x's dtype (ones and zeros when the layer is not affine)
    mean, rstd       (R,) float64: the statistics the forward normalised with, kept for the backward
    dweight, dbias   (D,) accumulated into (+=), as PyTorch accumulates into .grad; None: not wanted

Per row, over its D values (PyTorch's layer_norm):
    mean = sum(x) / D,  var = sum((x - mean)^2) / D   (biased),  rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd,  y = xhat * weight + bias
    backward:  gw = grad * weight
               dx = rstd * (gw - sum(gw) / D - xhat * sum(gw * xhat) / D)
               dweight += sum over rows of grad * xhat,  dbias += sum over rows of grad

Numerics: a row is small enough to stay in cache, so the statistics take two sweeps of it in float64
(the sum, then the sum of squared deviations from the mean: no cancellation, whatever the mean).
As in kernels/batchnorm.py, the float64 mean is split into hi + lo in x's dtype and x - mean is
computed as (x - hi) - lo, which is exact for x near the mean: float32 rows with mean 1e4 and
spread 1e-2 normalise to float32 accuracy.

Threads: the forward's thread owns row i of y, mean and rstd. The backward splits the rows into
min(BLOCKS, R // BLOCK_ROWS) blocks (at least one; a number that depends on R only, never on the
thread count or the build); a thread owns a block's rows of dx and the block's partial sums of
dweight and dbias (float64 rows of their own), which are then added in block order. Both builds
give the same bits on any thread count.
"""
import numpy as np
from numba import njit, prange

from kernels._registry import OPTIONS, compiled, register

# The backward's row blocks (see the header); each allocates its scratch rows, so small inputs get
# fewer of them.
BLOCKS = 64
BLOCK_ROWS = 16
GROUP = 4  # rows the backward adds into its partial sums at once (_add_rows takes four at a time)
# Parallel from these sizes (x.size), measured on 2 shared CPUs at D = 256: the forward's parallel
# build is no faster up to about 512 rows, the backward's (twice the work per element) pays from
# about 256.
FORWARD_PAR_MIN = 1 << 17
BACKWARD_PAR_MIN = 1 << 16


# -------------------------------------------------------------------------------------- NumPy twins

def layernorm_forward_np(x, weight, bias, eps):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=1)
    rstd = 1.0 / np.sqrt(x64.var(axis=1) + eps)
    xhat = (x64 - mean[:, None]) * rstd[:, None]
    return (xhat * weight + bias).astype(x.dtype), mean, rstd


def layernorm_backward_np(grad, x, weight, mean, rstd, dweight, dbias, need_dx):
    g = grad.astype(np.float64)
    xhat = (x.astype(np.float64) - mean[:, None]) * rstd[:, None]
    if dweight is not None:
        dweight += (g * xhat).sum(axis=0).astype(dweight.dtype)
    if dbias is not None:
        dbias += g.sum(axis=0).astype(dbias.dtype)
    if not need_dx:
        return None
    gw = g * weight
    dx = rstd[:, None] * (gw - gw.mean(axis=1, keepdims=True)
                          - xhat * (gw * xhat).mean(axis=1, keepdims=True))
    return dx.astype(x.dtype)


# ------------------------------------------------------------------------------------ Numba kernels

# The row sums run in float64 with LLVM's "reassoc" flag (kernels/_registry.py): it lets the
# vectoriser keep several running sums, in an order fixed by the compiled code (the same on any
# thread count). Without it the sum is a chain of dependent scalar adds, 3x slower at D = 256.
# They are functions of their own, not inlined by Numba, so the flag stays on their instructions
# alone: reassociating the kernels' (x - hi) - lo would undo the split of the mean.
_SUMS = dict(OPTIONS, fastmath={"reassoc"})


@njit(**_SUMS)
def _sum(a):
    # sum(a) in float64.
    s = 0.0
    for i in range(a.size):
        s += np.float64(a[i])
    return s


@njit(**_SUMS)
def _squared_deviations(a, mu):
    # sum((a - mu)^2) in float64.
    s = 0.0
    for i in range(a.size):
        d = np.float64(a[i]) - mu
        s += d * d
    return s


@njit(inline="always", **OPTIONS)
def _split(mu, dt):
    # The float64 mean as hi + lo in the dtype dt (lo is 0 in float64).
    hi = dt(mu)
    return hi, dt(mu - hi)


@compiled(parallel_min=FORWARD_PAR_MIN)
def _forward_rows(x, weight, bias, eps, y, mean, rstd):
    # x, y: (R, D). Thread owns row i: y[i], mean[i], rstd[i]. The row is swept three times while
    # it is in cache: its sum, its squared deviations, the normalise pass.
    d = x.shape[1]
    dt = x.dtype.type
    for i in prange(x.shape[0]):
        row = x[i]
        out = y[i]
        mu = _sum(row) / d
        r = 1.0 / np.sqrt(_squared_deviations(row, mu) / d + eps)
        mean[i] = mu
        rstd[i] = r
        hi, lo = _split(mu, dt)
        a = dt(r)
        for j in range(d):
            out[j] = ((row[j] - hi) - lo) * a * weight[j] + bias[j]


@njit(inline="always", **OPTIONS)
def _add_rows(q, g, m, aw, ab):
    # aw += the sum of rows 0:m of q, ab += that of g, in float64; four rows at a time when there
    # are four, so that the accumulators are loaded and stored once per four rows.
    if m == 4:
        q0, q1, q2, q3 = q[0], q[1], q[2], q[3]
        g0, g1, g2, g3 = g[0], g[1], g[2], g[3]
        for j in range(aw.size):
            aw[j] += ((np.float64(q0[j]) + np.float64(q1[j]))
                      + (np.float64(q2[j]) + np.float64(q3[j])))
            ab[j] += ((np.float64(g0[j]) + np.float64(g1[j]))
                      + (np.float64(g2[j]) + np.float64(g3[j])))
    else:
        for s in range(m):
            qs = q[s]
            gs = g[s]
            for j in range(aw.size):
                aw[j] += np.float64(qs[j])
                ab[j] += np.float64(gs[j])


@compiled(parallel_min=BACKWARD_PAR_MIN)
def _backward_rows(grad, x, weight, mean, rstd, need_dx, need_wgrad, dx, pw, pb):
    # grad, x, dx: (R, D); pw, pb: (B, D) float64 zeros ((B, 0) without need_wgrad), B the number
    # of row blocks. Thread owns block k: rows r0:r1 of dx and the partial sums pw[k], pb[k].
    # Per row, one sweep gives gw = grad * weight and gw * xhat (into the block's scratch rows
    # t1, t2, summed in float64 after the sweep, so the sweep carries no reduction and vectorises)
    # and grad * xhat (into q, added into the partials every GROUP rows); a second sweep, over the
    # row still in cache, writes dx.
    n, d = x.shape
    nb = pw.shape[0]
    dt = x.dtype.type
    for k in prange(nb):
        r0 = k * n // nb
        r1 = (k + 1) * n // nb
        t1 = np.empty(d, x.dtype)
        t2 = np.empty(d, x.dtype)
        q = np.empty((GROUP, d), x.dtype)
        for i0 in range(r0, r1, GROUP):
            m = min(GROUP, r1 - i0)
            for s in range(m):
                i = i0 + s
                g = grad[i]
                p = x[i]
                hi, lo = _split(mean[i], dt)
                a = dt(rstd[i])
                if need_wgrad:
                    qs = q[s]
                    for j in range(d):
                        xh = ((p[j] - hi) - lo) * a
                        gw = g[j] * weight[j]
                        t1[j] = gw
                        t2[j] = gw * xh
                        qs[j] = g[j] * xh
                else:
                    for j in range(d):
                        gw = g[j] * weight[j]
                        t1[j] = gw
                        t2[j] = gw * (((p[j] - hi) - lo) * a)
                if need_dx:
                    c1 = dt(_sum(t1) / d)
                    c2 = dt(_sum(t2) / d)
                    o = dx[i]
                    for j in range(d):
                        o[j] = a * ((t1[j] - c1) - ((p[j] - hi) - lo) * a * c2)
            if need_wgrad:
                _add_rows(q, grad[i0:i0 + m], m, pw[k], pb[k])


@njit(**OPTIONS)
def _add_partials(pw, pb, dweight, dbias):
    # dweight += sum over blocks of pw, dbias likewise: the blocks in order, in float64.
    d = pw.shape[1]
    sw = np.zeros(d, np.float64)
    sb = np.zeros(d, np.float64)
    for k in range(pw.shape[0]):
        rw = pw[k]
        rb = pb[k]
        for j in range(d):
            sw[j] += rw[j]
            sb[j] += rb[j]
    for j in range(d):
        dweight[j] += dweight.dtype.type(sw[j])
        dbias[j] += dbias.dtype.type(sb[j])


# ------------------------------------------------------------------------------ public entry points

def layernorm_forward(x, weight, bias, eps):
    n = x.shape[0]
    y = np.empty_like(x)
    mean = np.empty(n, np.float64)
    rstd = np.empty(n, np.float64)
    if n:
        _forward_rows(x, weight, bias, float(eps), y, mean, rstd)
    return y, mean, rstd


def layernorm_backward(grad, x, weight, mean, rstd, dweight, dbias, need_dx):
    n, d = x.shape
    need_wgrad = dweight is not None or dbias is not None
    dx = np.empty_like(x) if need_dx else np.empty((1, 1), x.dtype)
    if n and (need_dx or need_wgrad):
        # Partial sums of zero length when no parameter gradient is wanted: the blocks still split
        # the rows, and their partial rows are empty.
        nb = min(BLOCKS, max(1, n // BLOCK_ROWS))
        pw = np.zeros((nb, d if need_wgrad else 0), np.float64)
        pb = np.zeros_like(pw)
        _backward_rows(grad, x, weight, mean, rstd, bool(need_dx), need_wgrad, dx, pw, pb)
        if need_wgrad:
            _add_partials(pw, pb, dweight if dweight is not None else np.zeros(d, x.dtype),
                          dbias if dbias is not None else np.zeros(d, x.dtype))
    return dx if need_dx else None


register("layernorm_forward", layernorm_forward, layernorm_forward_np)
register("layernorm_backward", layernorm_backward, layernorm_backward_np)
