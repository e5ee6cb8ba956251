"""2-D max and average pooling, as PyTorch's max_pool2d / avg_pool2d (floor mode).

    x, dx (N, C, H, W)   y, grad (N, C, OH, OW)   idx (N, C, OH, OW) int64
    OH = (H + 2 ph - KH) // sh + 1        (OW likewise); kernel, stride, padding are (h, w) pairs.

max:  y = max over the window of the input padded with -inf; idx = the flat index (row * W + col)
      within the (n, c) plane of the first maximum in scan order (as PyTorch: a NaN
      wins, the last NaN if several; an all -inf window points at its first real input).
      backward: dx[n, c].flat[idx] += grad. With overlapping windows (stride < kernel) two windows
      can pick the same input, so one thread owns a whole (n, c) plane and does all of its scatters.
avg:  y = sum over the window of the zero-padded input / (KH * KW)   (count_include_pad=True: the
      padding counts in the divisor). backward: each input gets grad / (KH * KW) from every window
      that covers it (thread owns plane (n, c) of dx, so the overlapping adds do not race).
Padding must be at most half the kernel (checked by the layers), so every window holds at least one
real input.

Adaptive pooling (PyTorch's adaptive_avg_pool2d / adaptive_max_pool2d), output (N, C, OH, OW) for
any OH, OW >= 1: output row i pools input rows [floor(i H / OH), ceil((i + 1) H / OH)) (columns
likewise), so bins differ in size by one and may overlap when OH does not divide H.
adaptive avg:  y = the bin's mean; backward: each input gets grad / (bin area) from every bin that
      holds it. The sums run in float64.
adaptive max:  y, idx as max pooling over the bin (same tie and NaN rules); its backward is
      maxpool2d_backward (a scatter of grad to idx, the bins may overlap).
The global pool (OH = OW = 1) is one pass over each (n, c) plane.
"""
import numba
import numpy as np
from numba import njit, prange

from kernels._registry import OPTIONS, compiled, kernel, register


def out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


# ----------------------------------------------------------------------------------------- NumPy twins

def _windows_np(x, kernel_size, stride, padding, fill):
    """The KH*KW window offsets of the padded input, stacked last: (N, C, OH, OW, KH*KW)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill, x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    views = [xp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
             for ky in range(kh) for kx in range(kw)]
    return np.stack(views, axis=-1), oh, ow


def _scan_max_np(win, valid):
    """The position along the last axis that PyTorch's max scan picks in each window of ``win``
    (-inf where ``valid`` is False): the first maximum over the real inputs (so an all -inf window
    points at its first real input), but every NaN replaces the current best (the last NaN wins).
    Returns the positions and the values there."""
    first_max = np.argmax(valid & (win == win.max(axis=-1, keepdims=True)), axis=-1)
    nan = np.isnan(win) & valid
    last_nan = win.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    k = np.where(nan.any(axis=-1), last_nan, first_max)
    return k, np.take_along_axis(win, k[..., None], axis=-1)[..., 0]


def maxpool2d_forward_np(x, kernel_size, stride, padding):
    (_, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    win, oh, ow = _windows_np(x, kernel_size, stride, padding, -np.inf)
    valid = _windows_np(np.ones((1, 1) + x.shape[2:], bool), kernel_size, stride, padding, False)[0]
    k, y = _scan_max_np(win, valid)
    rows = np.arange(oh)[:, None] * sh + k // kw - ph
    cols = np.arange(ow)[None, :] * sw + k % kw - pw
    return np.ascontiguousarray(y), (rows * x.shape[3] + cols).astype(np.int64)


def maxpool2d_backward_np(grad, idx, x_shape):
    n, c, h, w = x_shape
    dx = np.zeros((n * c, h * w), grad.dtype)
    planes = np.repeat(np.arange(n * c), idx[0, 0].size)
    np.add.at(dx, (planes, idx.reshape(-1)), grad.reshape(-1))
    return dx.reshape(x_shape)


def avgpool2d_forward_np(x, kernel_size, stride, padding):
    win, _, _ = _windows_np(x, kernel_size, stride, padding, 0)
    return (win.sum(axis=-1) / x.dtype.type(kernel_size[0] * kernel_size[1])).astype(x.dtype)


def avgpool2d_backward_np(grad, x_shape, kernel_size, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x_shape
    oh, ow = grad.shape[2:]
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), grad.dtype)
    share = grad / grad.dtype.type(kh * kw)
    for ky in range(kh):
        for kx in range(kw):
            dxp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw] += share
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])


# ---------------------------------------------------------------------------------------- Numba kernels
# Every kernel runs one (n, c) plane per thread: prange over n * c, each thread owns plane (n, c)
# of its outputs (y and idx forward, dx backward).

@compiled(parallel_min=None)
def _nan_window(plane, r0, r1, c0, c1, w):
    # Rescan a window that holds a NaN (or an inf - inf sum) with PyTorch's rule: every NaN replaces
    # the running maximum, so the last NaN wins. Returns (value, flat index).
    best = -np.inf
    where = r0 * w + c0
    for r in range(r0, r1):
        xrow = plane[r]
        for q in range(c0, c1):
            v = xrow[q]
            if v > best or v != v:
                best = v
                where = r * w + q
    return best, where


_nan_window_serial = _nan_window.serial


@kernel(maxpool2d_forward_np, parallel_min=1 << 15)
def maxpool2d_forward(x, kernel_size, stride, padding):
    # The scan keeps the first strict maximum (no NaN test per element: that branch made the loop 4x
    # slower) and sums the window; a NaN sum sends the window to the exact rescan above.
    n_, c_, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.empty((n_, c_, oh, ow), dtype=x.dtype)
    idx = np.empty((n_, c_, oh, ow), dtype=np.int64)
    fast2x2 = kh == 2 and kw == 2 and ph == 0 and pw == 0
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        plane, yp, ip = x[n, c], y[n, c], idx[n, c]
        for i in range(oh):
            yrow, irow = yp[i], ip[i]
            r0 = max(i * sh - ph, 0)
            r1 = min(i * sh - ph + kh, h)
            if fast2x2:
                # The common 2x2 window without padding: no clipping, four loads, three compares.
                ra, rb = plane[r0], plane[r0 + 1]
                for j in range(ow):
                    q = j * sw
                    v0, v1, v2, v3 = ra[q], ra[q + 1], rb[q], rb[q + 1]
                    best, k = v0, q
                    if v1 > best:
                        best, k = v1, q + 1
                    if v2 > best:
                        best, k = v2, q + w
                    if v3 > best:
                        best, k = v3, q + w + 1
                    total = (v0 + v1) + (v2 + v3)
                    if total != total:
                        best, k = _nan_window_serial(plane, r0, r0 + 2, q, q + 2, w)
                        k -= r0 * w
                    yrow[j] = best
                    irow[j] = r0 * w + k
                continue
            for j in range(ow):
                c0 = max(j * sw - pw, 0)
                c1 = min(j * sw - pw + kw, w)
                best = -np.inf
                where = r0 * w + c0
                total = x.dtype.type(0)
                for r in range(r0, r1):
                    xrow = plane[r]
                    for q in range(c0, c1):
                        v = xrow[q]
                        total += v
                        if v > best:
                            best = v
                            where = r * w + q
                if total != total:
                    best, where = _nan_window_serial(plane, r0, r1, c0, c1, w)
                yrow[j] = best
                irow[j] = where
    return y, idx


@kernel(maxpool2d_backward_np, parallel_min=1 << 15)
def maxpool2d_backward(grad, idx, x_shape):
    n_, c_, h, w = x_shape
    dx = np.zeros((n_, c_, h, w), dtype=grad.dtype)
    oh, ow = grad.shape[2], grad.shape[3]
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        flat = dx[n, c].reshape(h * w)
        gp, ip = grad[n, c], idx[n, c]
        for i in range(oh):
            grow, irow = gp[i], ip[i]
            for j in range(ow):
                flat[irow[j]] += grow[j]
    return dx


@kernel(avgpool2d_forward_np, parallel_min=1 << 15)
def avgpool2d_forward(x, kernel_size, stride, padding):
    n_, c_, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.empty((n_, c_, oh, ow), dtype=x.dtype)
    scale = x.dtype.type(1) / x.dtype.type(kh * kw)
    zero = x.dtype.type(0)
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        plane, yp = x[n, c], y[n, c]
        if ph == 0 and pw == 0:
            # No padding, so no window is clipped: sum whole output rows, one kernel tap at a time
            # (a loop over j with a constant stride, instead of a loop per window).
            for i in range(oh):
                yrow = yp[i]
                for j in range(ow):
                    yrow[j] = zero
                for ky in range(kh):
                    xrow = plane[i * sh + ky]
                    for kx in range(kw):
                        for j in range(ow):
                            yrow[j] += xrow[j * sw + kx]
                for j in range(ow):
                    yrow[j] *= scale
            continue
        for i in range(oh):
            r0 = max(i * sh - ph, 0)
            r1 = min(i * sh - ph + kh, h)
            yrow = yp[i]
            for j in range(ow):
                c0 = max(j * sw - pw, 0)
                c1 = min(j * sw - pw + kw, w)
                s = x.dtype.type(0)
                for r in range(r0, r1):
                    xrow = plane[r]
                    for q in range(c0, c1):
                        s += xrow[q]
                yrow[j] = s * scale
    return y


@kernel(avgpool2d_backward_np, parallel_min=1 << 15)
def avgpool2d_backward(grad, x_shape, kernel_size, stride, padding):
    n_, c_, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = grad.shape[2], grad.shape[3]
    dx = np.zeros((n_, c_, h, w), dtype=grad.dtype)
    scale = grad.dtype.type(1) / grad.dtype.type(kh * kw)
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        dp, gp = dx[n, c], grad[n, c]
        if ph == 0 and pw == 0:
            # No padding: spread whole rows of the gradient, one kernel tap at a time (as forward).
            for i in range(oh):
                grow = gp[i]
                for ky in range(kh):
                    drow = dp[i * sh + ky]
                    for kx in range(kw):
                        for j in range(ow):
                            drow[j * sw + kx] += grow[j] * scale
            continue
        for i in range(oh):
            r0 = max(i * sh - ph, 0)
            r1 = min(i * sh - ph + kh, h)
            grow = gp[i]
            for j in range(ow):
                c0 = max(j * sw - pw, 0)
                c1 = min(j * sw - pw + kw, w)
                share = grow[j] * scale
                for r in range(r0, r1):
                    drow = dp[r]
                    for q in range(c0, c1):
                        drow[q] += share
    return dx


# ------------------------------------------------------------------------------- adaptive pooling

def adaptive_bins(size, out):
    """PyTorch's adaptive pooling bins along an axis of ``size`` into ``out``: arrays of the
    starts floor(i size / out) and ends ceil((i + 1) size / out), i < out."""
    i = np.arange(out)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def adaptive_avgpool2d_forward_np(x, output_size):
    # The mean over a bin is the mean over its columns of the means over its rows: row bins
    # first, (N, C, OH, W), then column bins.
    (oh, ow), (h, w) = output_size, x.shape[2:]
    rows = np.stack([x[:, :, a:b].mean(axis=2) for a, b in zip(*adaptive_bins(h, oh))], axis=2)
    return np.stack([rows[..., a:b].mean(axis=3) for a, b in zip(*adaptive_bins(w, ow))], axis=3)


def adaptive_avgpool2d_backward_np(grad, x_shape):
    n, c, h, w = x_shape
    oh, ow = grad.shape[2:]
    rows = np.zeros((n, c, oh, w), grad.dtype)
    for j, (a, b) in enumerate(zip(*adaptive_bins(w, ow))):
        rows[..., a:b] += grad[..., j:j + 1] / grad.dtype.type(b - a)
    dx = np.zeros(x_shape, grad.dtype)
    for i, (a, b) in enumerate(zip(*adaptive_bins(h, oh))):
        dx[:, :, a:b] += rows[:, :, i:i + 1] / grad.dtype.type(b - a)
    return dx


def _bin_taps_np(size, out):
    """(out, K) indices of each bin's inputs, K the largest bin, and which of them are in the bin
    (the others repeat the last input)."""
    start, end = adaptive_bins(size, out)
    at = start[:, None] + np.arange((end - start).max())
    inside = at < end[:, None]
    return np.minimum(at, size - 1), inside


def adaptive_maxpool2d_forward_np(x, output_size):
    (oh, ow), (h, w) = output_size, x.shape[2:]
    rows, rin = _bin_taps_np(h, oh)
    cols, cin = _bin_taps_np(w, ow)
    kh, kw = rows.shape[1], cols.shape[1]
    win = x[:, :, rows[:, None, :, None], cols[None, :, None, :]]     # (N, C, OH, OW, KH, KW)
    valid = (rin[:, None, :, None] & cin[None, :, None, :]).reshape(oh, ow, kh * kw)
    win = np.where(valid, win.reshape(win.shape[:4] + (kh * kw,)), x.dtype.type(-np.inf))
    k, y = _scan_max_np(win, valid)
    r = rows[np.arange(oh)[:, None], k // kw]          # (N, C, OH, OW): the winner's row
    q = cols[np.arange(ow), k % kw]                     # and column
    return np.ascontiguousarray(y), (r * w + q).astype(np.int64)


@compiled(parallel_min=1 << 15, fastmath=("reassoc",))
def _adaptive_avg(x, y, nchunk):
    # y (N, C, OH, OW) = the bin means of x (N, C, H, W). Per output row, the bin's rows are summed
    # column by column (a vectorised loop over W) into float64 column sums, then each output adds
    # its bin's columns; the global pool sums the whole plane in one loop, in float64 running sums
    # ("reassoc" lets it vectorise). The (n, c) planes are split into nchunk chunks; a thread owns
    # a chunk (with its column sums) and writes y[n, c] of its planes.
    n_, c_, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    tasks = n_ * c_
    for chunk in prange(nchunk):
        cols = np.empty(w, np.float64)
        for t in range(chunk * tasks // nchunk, (chunk + 1) * tasks // nchunk):
            n, c = t // c_, t % c_
            plane, yp = x[n, c], y[n, c]
            if oh == 1 and ow == 1:
                flat = plane.reshape(h * w)
                s = 0.0
                for k in range(h * w):
                    s += flat[k]
                yp[0, 0] = s / (h * w)
                continue
            for i in range(oh):
                r0, r1 = i * h // oh, ((i + 1) * h + oh - 1) // oh
                cols[:] = 0.0
                for r in range(r0, r1):
                    xrow = plane[r]
                    for q in range(w):
                        cols[q] += xrow[q]
                yrow = yp[i]
                for j in range(ow):
                    q0, q1 = j * w // ow, ((j + 1) * w + ow - 1) // ow
                    s = 0.0
                    for q in range(q0, q1):
                        s += cols[q]
                    yrow[j] = s / ((r1 - r0) * (q1 - q0))


@compiled(parallel_min=1 << 15)
def _adaptive_avg_backward(dx, grad, nchunk):
    # dx (N, C, H, W) (first: its size picks the build; grad may be far smaller): each input gets
    # grad / (bin area) of every bin holding it. Per output row, the row's shares are laid along
    # W (float64), then added to each input row of its bin (the bins of consecutive rows may
    # overlap: dx is cleared first and accumulates). The (n, c) planes are split into nchunk
    # chunks; a thread owns a chunk and writes dx[n, c] of its planes.
    n_, c_, h, w = dx.shape
    oh, ow = grad.shape[2], grad.shape[3]
    tasks = n_ * c_
    zero = dx.dtype.type(0)
    for chunk in prange(nchunk):
        share = np.empty(w, np.float64)
        for t in range(chunk * tasks // nchunk, (chunk + 1) * tasks // nchunk):
            n, c = t // c_, t % c_
            gp, dp = grad[n, c], dx[n, c].reshape(h * w)
            if oh == 1 and ow == 1:
                v = dx.dtype.type(gp[0, 0] / (h * w))
                for k in range(h * w):
                    dp[k] = v
                continue
            for k in range(h * w):
                dp[k] = zero
            for i in range(oh):
                r0, r1 = i * h // oh, ((i + 1) * h + oh - 1) // oh
                share[:] = 0.0
                grow = gp[i]
                for j in range(ow):
                    q0, q1 = j * w // ow, ((j + 1) * w + ow - 1) // ow
                    v = grow[j] / ((r1 - r0) * (q1 - q0))
                    for q in range(q0, q1):
                        share[q] += v
                for r in range(r0, r1):
                    drow = dp[r * w:(r + 1) * w]
                    for q in range(w):
                        drow[q] += share[q]


@njit(inline="always", **OPTIONS)
def _plane_max(plane, best, row, total):
    # The first strict maximum of plane (H, W) in scan order, its flat index, and the plane's sum
    # (NaN when it holds a NaN, or an inf and a -inf). The scan runs down the columns: best[q]
    # and row[q] keep column q's first maximum and its row, total[q] its sum, so the loop over q
    # carries no dependence and vectorises (a scan along the plane would not); the columns are
    # then merged, ties going to the lower flat index.
    h, w = plane.shape
    for q in range(w):
        best[q] = -np.inf
        row[q] = 0
        total[q] = 0
    for r in range(h):
        xrow = plane[r]
        for q in range(w):
            v = xrow[q]
            m = v > best[q]
            best[q] = v if m else best[q]
            row[q] = r if m else row[q]
            total[q] += v
    value, where, s = best[0], row[0] * w, total[0]
    for q in range(1, w):
        k = row[q] * w + q
        if best[q] > value or (best[q] == value and k < where):
            value, where = best[q], k
        s += total[q]
    return value, where, s


@compiled(parallel_min=1 << 15)
def _adaptive_max(x, y, idx, nchunk):
    # y, idx (N, C, OH, OW): each bin's maximum and its flat index in the plane, scanned as
    # maxpool2d_forward does (first strict maximum; a NaN sum sends the bin to the exact rescan);
    # the global pool is one vectorised pass over the plane (_plane_max). The (n, c) planes are
    # split into nchunk chunks; a thread owns a chunk (with _plane_max's column buffers) and
    # writes y[n, c] and idx[n, c] of its planes.
    n_, c_, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    tasks = n_ * c_
    ninf, zero = x.dtype.type(-np.inf), x.dtype.type(0)
    for chunk in prange(nchunk):
        cbest = np.empty(w, x.dtype)
        crow = np.empty(w, np.int64)
        ctotal = np.empty(w, x.dtype)
        for t in range(chunk * tasks // nchunk, (chunk + 1) * tasks // nchunk):
            n, c = t // c_, t % c_
            plane, yp, ip = x[n, c], y[n, c], idx[n, c]
            if oh == 1 and ow == 1:
                best, where, total = _plane_max(plane, cbest, crow, ctotal)
                if total != total:
                    best, where = _nan_window_serial(plane, 0, h, 0, w, w)
                yp[0, 0] = best
                ip[0, 0] = where
                continue
            for i in range(oh):
                r0, r1 = i * h // oh, ((i + 1) * h + oh - 1) // oh
                for j in range(ow):
                    q0, q1 = j * w // ow, ((j + 1) * w + ow - 1) // ow
                    best, where, total = ninf, r0 * w + q0, zero
                    for r in range(r0, r1):
                        xrow = plane[r]
                        for q in range(q0, q1):
                            v = xrow[q]
                            total += v
                            if v > best:
                                best = v
                                where = r * w + q
                    if total != total:
                        best, where = _nan_window_serial(plane, r0, r1, q0, q1, w)
                    yp[i, j] = best
                    ip[i, j] = where


def _pool_chunks(x):
    """Chunks of the adaptive kernels' (n, c) planes: a few per thread (any count gives the same
    result)."""
    return max(1, min(x.shape[0] * x.shape[1], 4 * numba.get_num_threads()))


def adaptive_avgpool2d_forward(x, output_size):
    y = np.empty(x.shape[:2] + tuple(output_size), x.dtype)
    _adaptive_avg(x, y, _pool_chunks(x))
    return y


def adaptive_avgpool2d_backward(grad, x_shape):
    dx = np.empty(x_shape, grad.dtype)
    _adaptive_avg_backward(dx, grad, _pool_chunks(dx))
    return dx


def adaptive_maxpool2d_forward(x, output_size):
    y = np.empty(x.shape[:2] + tuple(output_size), x.dtype)
    idx = np.empty(y.shape, np.int64)
    _adaptive_max(x, y, idx, _pool_chunks(x))
    return y, idx


register("adaptive_avgpool2d_forward", adaptive_avgpool2d_forward, adaptive_avgpool2d_forward_np)
register("adaptive_avgpool2d_backward", adaptive_avgpool2d_backward,
         adaptive_avgpool2d_backward_np)
register("adaptive_maxpool2d_forward", adaptive_maxpool2d_forward, adaptive_maxpool2d_forward_np)
# The scatter of max pooling's backward is the same whatever chose the indices.
register("adaptive_maxpool2d_backward", maxpool2d_backward, maxpool2d_backward_np)
