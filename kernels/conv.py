"""2-D convolution (cross-correlation, as PyTorch's conv2d): forward, input gradient, weight+bias
gradient, with stride, zero padding and dilation.

    x (N, C, H, W)   w (O, C, KH, KW)   b (O,) or None   y, grad (N, O, OH, OW)
    OH = (H + 2 ph - dh (KH - 1) - 1) // sh + 1        (OW likewise)

    y[n, o, i, j]   = b[o] + sum_{c, ky, kx} w[o, c, ky, kx] * xp[n, c, i sh + ky dh, j sw + kx dw]
    dxp[n, c, ...] += w[o, c, ky, kx] * grad[n, o, i, j]   at the same positions (dx = dxp cropped)
    dw[o, c, ky, kx] += sum_{n, i, j} grad[n, o, i, j] * xp[n, c, i sh + ky dh, j sw + kx dw]
    db[o]           += sum_{n, i, j} grad[n, o, i, j]

where xp is x zero-padded by (ph, pw). stride, padding and dilation are (h, w) pairs of ints.

How the compiled path is fast (NOTES.md: a direct kernel beats im2col + BLAS for 3x3):
- Stride 1 runs on the *flattened padded plane*. With the input padded to (Hp, Wp), output pixel
  (i, j) and tap (ky, kx) read the flat index  i Wp + j + (ky dh Wp + kx dw),  so one tap is a
  shifted contiguous slice of the plane, and the whole output plane is one long contiguous loop of
  L = (OH - 1) Wp + OW steps (the Wp - OW columns between rows are computed and thrown away). That
  loop vectorises even at 14x14, where a row-by-row loop of 14 would not.
- Each loaded input vector is reused across 4 output channels, and for 3-wide kernels the 3 taps of
  a row are summed in one expression, so each accumulator is loaded and stored once per 3
  multiply-adds. A last block of fewer than 4 channels runs channel by channel (no wasted work).
- The input gradient at stride 1 *is* a stride-1 correlation of the (re-padded) output gradient with
  the flipped, transposed kernel, so it runs on the same forward kernel; at stride s the gradient is
  first spread onto a zero grid s times finer ("zero-upsampled"), then the same.
- The weight gradient reduces over (n, pixels): on the same flattened plane, dw[o, c, ky, kx] is a
  sum of dot products of two contiguous rows (the gradient of channel o laid on the plane's grid,
  and the tap's shifted slice of input plane c), 4 output channels and 3 taps per loop. Those dot
  products vectorise only with LLVM's "reassoc" flag (Numba keeps a float sum's order otherwise).
  The direct loop beats im2col + BLAS at the cnn's shapes, where gathering 9 shifted copies of the
  input costs as much as the GEMM saves. Small planes are stacked several samples to a plane (8 at
  14x14) so that each dot product, and the reduction of its running sums after the loop, covers a
  group. The forward does not stack samples: its accumulator rows, loaded and stored on every
  pass, would outgrow L1.
- Each thread of the forward kernel owns a chunk of samples: it pads each into its own buffer, which
  then stays in cache for every output channel (no padded copy of the batch is written).
- The plane loop runs over a whole number of 8-float vectors (see _loops.VEC): LLVM does not
  vectorise a loop's remainder.
- The direct loops are compiled with FMA contraction (``fastmath=("contract",)``): a multiply-add
  is one instruction with one rounding.
- Other strides take a plain direct-loop general path (forward and weight gradient).
"""
import numba
import numpy as np
from numba import njit, prange

from kernels import _loops, _vmath
from kernels._registry import OPTIONS, compiled, register


def out_size(size, k, s, p, d):
    """Output length along one axis (PyTorch's formula, floor mode)."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ----------------------------------------------------------------------------------------- NumPy twins
# A loop over the KH*KW kernel offsets, each one a tensordot over channels on a strided view of the
# padded input: the plain vectorised NumPy convolution, the baseline.

def _pad_np(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    xp = np.zeros(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), x.dtype)
    xp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    return xp


def _window_np(a, ky, kx, oh, ow, stride, dilation):
    (sh, sw), (dh, dw) = stride, dilation
    y0, x0 = ky * dh, kx * dw
    return a[:, :, y0:y0 + sh * (oh - 1) + 1:sh, x0:x0 + sw * (ow - 1) + 1:sw]


def conv2d_forward_np(x, w, b, stride, padding, dilation):
    kh, kw = w.shape[2:]
    oh = out_size(x.shape[2], kh, stride[0], padding[0], dilation[0])
    ow = out_size(x.shape[3], kw, stride[1], padding[1], dilation[1])
    xp = _pad_np(x, *padding)
    acc = np.zeros((x.shape[0], oh, ow, w.shape[0]), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            acc += np.tensordot(_window_np(xp, ky, kx, oh, ow, stride, dilation), w[:, :, ky, kx],
                                axes=([1], [1]))
    if b is not None:
        acc += b
    return np.ascontiguousarray(acc.transpose(0, 3, 1, 2))


def conv2d_backward_input_np(grad, w, x_shape, stride, padding, dilation):
    n, c, h, wd = x_shape
    kh, kw = w.shape[2:]
    ph, pw = padding
    oh, ow = grad.shape[2:]
    dxp = np.zeros((n, h + 2 * ph, wd + 2 * pw, c), grad.dtype)   # channels last while summing
    view = dxp.transpose(0, 3, 1, 2)
    for ky in range(kh):
        for kx in range(kw):
            win = _window_np(view, ky, kx, oh, ow, stride, dilation).transpose(0, 2, 3, 1)
            win += np.tensordot(grad, w[:, :, ky, kx], axes=([1], [0]))
    return np.ascontiguousarray(view[:, :, ph:ph + h, pw:pw + wd])


def conv2d_backward_weight_np(grad, x, stride, padding, dilation, dw, db):
    kh, kw = dw.shape[2:]
    oh, ow = grad.shape[2:]
    xp = _pad_np(x, *padding)
    for ky in range(kh):
        for kx in range(kw):
            dw[:, :, ky, kx] += np.tensordot(grad, _window_np(xp, ky, kx, oh, ow, stride, dilation),
                                             axes=([0, 2, 3], [0, 2, 3]))
    if db is not None:
        db += grad.sum(axis=(0, 2, 3), dtype=np.float64).astype(db.dtype)


# ---------------------------------------------------------------------------------------- Numba kernels

@compiled(parallel_min=1 << 14)
def _pad_into(x, xp, top, left):
    # x (N, C, H, W) -> xp (N, C, Hp, Wp), zero outside the window placed at (top, left); top/left
    # may be negative (the source is then cropped). Thread owns plane (n, c) of xp.
    n_, c_, h, wd = x.shape
    hp, wp = xp.shape[2], xp.shape[3]
    zero = xp.dtype.type(0)
    y0, y1 = max(0, top), min(hp, top + h)
    x0, x1 = max(0, left), min(wp, left + wd)
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        dst, src = xp[n, c], x[n, c]
        for i in range(hp):
            row = dst[i]
            if i < y0 or i >= y1:
                for j in range(wp):
                    row[j] = zero
                continue
            srow = src[i - top]
            for j in range(x0):
                row[j] = zero
            for j in range(x0, x1):
                row[j] = srow[j - left]
            for j in range(x1, wp):
                row[j] = zero


@compiled(parallel_min=1 << 14)
def _upsample_pad_into(g, gp, top, left, sh, sw):
    # g (N, O, OH, OW) -> gp (N, O, Hq, Wq): g[n, o, i, j] lands at (top + i sh, left + j sw), zeros
    # elsewhere (positions outside gp are dropped). Thread owns plane (n, o) of gp.
    n_, o_, oh, ow = g.shape
    hq, wq = gp.shape[2], gp.shape[3]
    zero = gp.dtype.type(0)
    for t in prange(n_ * o_):
        n, o = t // o_, t % o_
        dst, src = gp[n, o], g[n, o]
        for i in range(hq):
            row = dst[i]
            for j in range(wq):
                row[j] = zero
        for i in range(oh):
            r = top + i * sh
            if r < 0 or r >= hq:
                continue
            row, srow = dst[r], src[i]
            for j in range(ow):
                q = left + j * sw
                if 0 <= q < wq:
                    row[q] = srow[j]


@njit(inline="always", **OPTIONS)
def _place(xs, xf, at, top, left, hp, wp):
    # Copy one sample xs (C, H, W) into the flattened planes xf (C, ...) at (top, left) of the
    # (Hp, Wp) frame whose first row is row ``at`` of xf (cropped where it sticks out of the frame);
    # what lies outside is left as it was (the callers' buffers start zero and only this window is
    # ever written).
    h, wd = xs.shape[1], xs.shape[2]
    r0, r1 = max(0, top), min(hp, top + h)
    q0, q1 = max(0, left), min(wp, left + wd)
    for c in range(xs.shape[0]):
        for r in range(r0, r1):
            src = xs[c, r - top, q0 - left:q1 - left]
            dst = xf[c, (at + r) * wp + q0:(at + r) * wp + q1]
            for q in range(q1 - q0):
                dst[q] = src[q]


@compiled(parallel_min=1 << 12, fastmath=("contract",))
def _corr_s1(x, top, left, hp, wp, w4, b, has_bias, y, dh, dw, nchunk):
    # Valid, stride-1 correlation of x placed at (top, left) in a zero (Hp, Wp) frame (top/left may
    # be negative: x is then cropped). x (N, C, H, W); w4 (O4, C, KH, KW), O4 = O rounded up to a
    # multiple of 4, zero rows beyond O; b (O4,); y (N, O, OH, OW), OH = Hp - dh (KH-1), OW alike.
    # Samples are split into nchunk chunks (a few per thread); a thread owns a chunk: it pads each
    # sample into its own buffer (so the padded sample stays in cache for every output channel, and
    # no padded copy of the batch is written; the zero border is written once per chunk), and
    # writes y[n] of its samples only.
    n_, c_ = x.shape[0], x.shape[1]
    kh, kw = w4.shape[2], w4.shape[3]
    o_, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    nblk = w4.shape[0] // 4
    length = ((oh - 1) * wp + ow + _loops.VEC - 1) // _loops.VEC * _loops.VEC
    zero = y.dtype.type(0)
    for chunk in prange(nchunk):
        xf = np.zeros((c_, hp * wp + _loops.VEC), dtype=y.dtype)
        acc = np.empty((4, length), dtype=y.dtype)
        a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
        for n in range(chunk * n_ // nchunk, (chunk + 1) * n_ // nchunk):
            _place(x[n], xf, 0, top, left, hp, wp)
            for blk in range(nblk):
                o0 = blk * 4
                b0 = b[o0] if has_bias else zero
                b1 = b[o0 + 1] if has_bias else zero
                b2 = b[o0 + 2] if has_bias else zero
                b3 = b[o0 + 3] if has_bias else zero
                for j in range(length):
                    a0[j] = b0
                    a1[j] = b1
                    a2[j] = b2
                    a3[j] = b3
                nrem = min(4, o_ - o0)
                if nrem < 4:
                    for k in range(nrem):
                        a = acc[k]
                        for c in range(c_):
                            plane = xf[c]
                            for ky in range(kh):
                                for kx in range(kw):
                                    off = ky * dh * wp + kx * dw
                                    s = plane[off:off + length]
                                    wv = w4[o0 + k, c, ky, kx]
                                    for j in range(length):
                                        a[j] += wv * s[j]
                for c in range(c_ if nrem == 4 else 0):
                    plane = xf[c]
                    for ky in range(kh):
                        base = ky * dh * wp
                        if kw == 3:
                            # The three taps of a kernel row at once (a last block of fewer
                            # than 4 channels goes one by one above).
                            _loops.fma4x3(a0, a1, a2, a3, plane[base:base + length],
                                    plane[base + dw:base + dw + length],
                                    plane[base + 2 * dw:base + 2 * dw + length],
                                    w4[o0, c, ky], w4[o0 + 1, c, ky], w4[o0 + 2, c, ky],
                                    w4[o0 + 3, c, ky], 0, length)
                        else:
                            for kx in range(kw):
                                off = base + kx * dw
                                _loops.fma4x1(a0, a1, a2, a3, plane[off:off + length],
                                        w4[o0, c, ky, kx], w4[o0 + 1, c, ky, kx],
                                        w4[o0 + 2, c, ky, kx], w4[o0 + 3, c, ky, kx], length)
                for k in range(nrem):
                    src, dst = acc[k], y[n, o0 + k]
                    for i in range(oh):
                        row = dst[i]
                        part = src[i * wp:i * wp + ow]
                        for j in range(ow):
                            row[j] = part[j]


@compiled(parallel_min=1 << 14, fastmath=("contract",))
def _conv_general(xp, w, b, has_bias, y, sh, sw, dh, dw):
    # Any stride, already padded input. xp (N, C, Hp, Wp), w (O, C, KH, KW), y (N, O, OH, OW).
    # Thread owns plane (n, o) of y.
    n_, c_ = xp.shape[0], xp.shape[1]
    o_, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    for t in prange(n_ * o_):
        n, o = t // o_, t % o_
        bias = b[o] if has_bias else y.dtype.type(0)
        for i in range(oh):
            row = y[n, o, i]
            for j in range(ow):
                row[j] = bias
            for c in range(c_):
                for ky in range(kh):
                    xrow = xp[n, c, i * sh + ky * dh]
                    for kx in range(kw):
                        wv = w[o, c, ky, kx]
                        start = kx * dw
                        for j in range(ow):
                            row[j] += wv * xrow[start + j * sw]


@compiled(parallel_min=1 << 14, fastmath=("contract",))
def _wgrad_general(grad, xp, dw_, db, has_bias, sh, sw, dh, dwl):
    # Any stride. grad (N, O, OH, OW), xp (N, C, Hp, Wp) padded input; accumulates into dw_, db.
    # Thread owns the pair (o, c): writes dw_[o, c] only (and db[o] when c == 0).
    n_, o_, oh, ow = grad.shape
    c_ = xp.shape[1]
    kh, kw = dw_.shape[2], dw_.shape[3]
    for t in prange(o_ * c_):
        o, c = t // c_, t % c_
        for ky in range(kh):
            for kx in range(kw):
                total = 0.0
                for n in range(n_):
                    for i in range(oh):
                        grow = grad[n, o, i]
                        xrow = xp[n, c, i * sh + ky * dh]
                        start = kx * dwl
                        for j in range(ow):
                            total += grow[j] * xrow[start + j * sw]
                dw_[o, c, ky, kx] += total
        if has_bias and c == 0:
            total = 0.0
            for n in range(n_):
                for i in range(oh):
                    grow = grad[n, o, i]
                    for j in range(ow):
                        total += grow[j]
            db[o] += total


@njit(inline="always", **OPTIONS)
def _add3(row, a, b, c):
    row[0] += a
    row[1] += b
    row[2] += c


@compiled(parallel_min=1 << 12, fastmath=("contract", "reassoc"))
def _wgrad_s1(grad, x, ph, pw, dw_, db, has_bias, dh, dwl, nchunk, group):
    # Stride-1 weight gradient. grad (N, O, OH, OW); x (N, C, H, W), zero-padded by (ph, pw) to
    # (Hp, Wp); accumulates into dw_ (O, C, KH, KW) and db (O,).
    # On the flattened padded plane (see _corr_s1) tap (ky, kx) of every output pixel is one shifted
    # contiguous slice of the input plane, so dw[o, c, ky, kx] is a sum of dot products of two
    # contiguous rows: the gradient of channel o laid on the plane's grid (zeros in the discarded
    # columns) and that slice. Each dot product runs in float32 and vectorises into running sums
    # ("reassoc": Numba keeps a sum's order otherwise and the loop runs one element at a time);
    # the results add up in float64. Output channels go in blocks of 4 and, for 3-wide kernels, the
    # 3 taps of a kernel row in one loop: 7 loads feed 12 multiply-adds. A last block of fewer than
    # 4 channels computes its missing rows on zeros.
    # Samples are stacked ``group`` at a time into one tall plane, every ``period`` rows (the zero
    # rows between two samples are shared: the frames overlap where both are zero, and no valid
    # output's taps reach the next sample), so one dot product covers the whole group, and the
    # reduction of its running sums that follows every loop is paid once a group instead of once a
    # sample (see _STACK_POSITIONS). The last group may be short: the buffers are cleared for it.
    # Output channel blocks are split into nchunk chunks; a thread owns a chunk: it writes dw_[o]
    # and db[o] of its channels only, and stacks the samples into its own buffer.
    n_, o_, oh, ow = grad.shape
    c_, h = x.shape[1], x.shape[2]
    kh, kw = dw_.shape[2], dw_.shape[3]
    hp, wp = h + 2 * ph, x.shape[3] + 2 * pw
    period = max(h + ph, oh)
    size = ((group - 1) * period + hp) * wp + _loops.VEC
    nblk = (o_ + 3) // 4
    zero = dw_.dtype.type(0)
    for chunk in prange(nchunk):
        blk0, blk1 = chunk * nblk // nchunk, (chunk + 1) * nblk // nchunk
        xf = np.zeros((c_, size), dtype=x.dtype)
        g = np.zeros((blk1 - blk0, 4, size), dtype=dw_.dtype)
        acc = np.zeros((blk1 - blk0, 4, c_, kh, kw))
        bias = np.zeros((blk1 - blk0, 4))
        for n0 in range(0, n_, group):
            cnt = min(group, n_ - n0)
            if cnt < group:   # clear what the full groups left beyond the short one
                xf[:] = zero
                g[:] = zero
            length = (((cnt - 1) * period + oh - 1) * wp + ow + _loops.VEC - 1) // _loops.VEC * _loops.VEC
            for m in range(cnt):
                _place(x[n0 + m], xf, m * period, ph, pw, hp, wp)
            for blk in range(blk0, blk1):
                gb, ab = g[blk - blk0], acc[blk - blk0]
                for k in range(min(4, o_ - blk * 4)):
                    row = gb[k]
                    for m in range(cnt):
                        for i in range(oh):
                            src = grad[n0 + m, blk * 4 + k, i]
                            at = (m * period + i) * wp
                            dst = row[at:at + ow]
                            for j in range(ow):
                                dst[j] = src[j]
                    if has_bias:
                        bias[blk - blk0, k] += _vmath.sum64(row[:length])
                g0, g1, g2, g3 = gb[0], gb[1], gb[2], gb[3]
                for c in range(c_):
                    plane = xf[c]
                    for ky in range(kh):
                        base = ky * dh * wp
                        if kw == 3:
                            s0 = plane[base:base + length]
                            s1 = plane[base + dwl:base + dwl + length]
                            s2 = plane[base + 2 * dwl:base + 2 * dwl + length]
                            t00 = t01 = t02 = t10 = t11 = t12 = zero
                            t20 = t21 = t22 = t30 = t31 = t32 = zero
                            for j in range(length):
                                v0, v1, v2 = s0[j], s1[j], s2[j]
                                u0, u1, u2, u3 = g0[j], g1[j], g2[j], g3[j]
                                t00, t01, t02 = t00 + u0 * v0, t01 + u0 * v1, t02 + u0 * v2
                                t10, t11, t12 = t10 + u1 * v0, t11 + u1 * v1, t12 + u1 * v2
                                t20, t21, t22 = t20 + u2 * v0, t21 + u2 * v1, t22 + u2 * v2
                                t30, t31, t32 = t30 + u3 * v0, t31 + u3 * v1, t32 + u3 * v2
                            _add3(ab[0, c, ky], t00, t01, t02)
                            _add3(ab[1, c, ky], t10, t11, t12)
                            _add3(ab[2, c, ky], t20, t21, t22)
                            _add3(ab[3, c, ky], t30, t31, t32)
                        else:
                            for kx in range(kw):
                                off = base + kx * dwl
                                s = plane[off:off + length]
                                t0 = t1 = t2 = t3 = zero
                                for j in range(length):
                                    v = s[j]
                                    t0, t1 = t0 + g0[j] * v, t1 + g1[j] * v
                                    t2, t3 = t2 + g2[j] * v, t3 + g3[j] * v
                                ab[0, c, ky, kx] += t0
                                ab[1, c, ky, kx] += t1
                                ab[2, c, ky, kx] += t2
                                ab[3, c, ky, kx] += t3
        for blk in range(blk0, blk1):
            for k in range(min(4, o_ - blk * 4)):
                o = blk * 4 + k
                dst, src = dw_[o], acc[blk - blk0, k]
                for c in range(c_):
                    for ky in range(kh):
                        for kx in range(kw):
                            dst[c, ky, kx] += src[c, ky, kx]
                if has_bias:
                    db[o] += bias[blk - blk0, k]


def _padded(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    n, c, h, wd = x.shape
    xp = np.empty((n, c, h + 2 * ph, wd + 2 * pw), x.dtype)
    _pad_into(x, xp, ph, pw)
    return xp


# _wgrad_s1 stacks enough samples that one dot product runs over about this many plane positions:
# 8 samples of 14x14 padded by 1, 2 of 28x28 (0.8x the time of one sample a loop at 14x14).
_STACK_POSITIONS = 2048


def _stack(x, padding):
    """Samples per group of _wgrad_s1 for input x padded by ``padding``."""
    (n, _, h, wd), (ph, pw) = x.shape, padding
    return max(1, min(n, _STACK_POSITIONS // ((h + 2 * ph) * (wd + 2 * pw))))


def _blocked4(w, b):
    """w padded with zero output channels to a multiple of 4, and b likewise (zeros if None)."""
    o = w.shape[0]
    o4 = (o + 3) // 4 * 4
    w4 = np.zeros((o4,) + w.shape[1:], w.dtype)
    w4[:o] = w
    b4 = np.zeros(o4, w.dtype)
    if b is not None:
        b4[:o] = b
    return w4, b4


def _corr_valid_s1(x, top, left, hp, wp, w, b, dilation):
    """Valid stride-1 correlation of x placed at (top, left) in a zero (hp, wp) frame."""
    kh, kw = w.shape[2:]
    dh, dw = dilation
    y = np.empty((x.shape[0], w.shape[0], hp - dh * (kh - 1), wp - dw * (kw - 1)), x.dtype)
    w4, b4 = _blocked4(w, b)
    nchunk = min(x.shape[0], 2 * numba.get_num_threads())   # any count gives the same result
    _corr_s1(x, top, left, hp, wp, w4, b4, b is not None, y, dh, dw, nchunk)
    return y


def conv2d_forward(x, w, b, stride, padding, dilation):
    (ph, pw), (h, wd) = padding, x.shape[2:]
    if stride == (1, 1):
        return _corr_valid_s1(x, ph, pw, h + 2 * ph, wd + 2 * pw, w, b, dilation)
    xp = _padded(x, ph, pw)
    kh, kw = w.shape[2:]
    oh = out_size(h, kh, stride[0], ph, dilation[0])
    ow = out_size(wd, kw, stride[1], pw, dilation[1])
    y = np.empty((x.shape[0], w.shape[0], oh, ow), x.dtype)
    bias = b if b is not None else np.zeros(w.shape[0], x.dtype)
    _conv_general(xp, w, bias, b is not None, y, stride[0], stride[1], dilation[0], dilation[1])
    return y


def conv2d_backward_input(grad, w, x_shape, stride, padding, dilation):
    # dx[n, c, u, v] = sum w[o, c, ky, kx] * G[n, o, u + ph - ky dh, v + pw - kx dw], G the gradient
    # spread onto the stride-1 grid. Flipping the kernel turns that into a valid correlation of G
    # placed at (dh (KH - 1) - ph, dw (KW - 1) - pw) in a zero (H + dh (KH-1), W + dw (KW-1)) frame.
    n, c, h, wd = x_shape
    kh, kw = w.shape[2:]
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    top, left = eh - padding[0], ew - padding[1]
    wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    if stride == (1, 1):
        return _corr_valid_s1(grad, top, left, h + eh, wd + ew, wt, None, dilation)
    gp = np.empty((n, w.shape[0], h + eh, wd + ew), grad.dtype)
    _upsample_pad_into(grad, gp, top, left, stride[0], stride[1])
    return _corr_valid_s1(gp, 0, 0, h + eh, wd + ew, wt, None, dilation)


def conv2d_backward_weight(grad, x, stride, padding, dilation, dw, db):
    has_bias = db is not None
    dbuf = db if has_bias else np.zeros(dw.shape[0], dw.dtype)
    if stride == (1, 1):
        nchunk = min((dw.shape[0] + 3) // 4, numba.get_num_threads())   # any count: same result
        _wgrad_s1(grad, x, *padding, dw, dbuf, has_bias, *dilation, nchunk, _stack(x, padding))
        return
    _wgrad_general(grad, _padded(x, *padding), dw, dbuf, has_bias, *stride, *dilation)


register("conv2d_forward", conv2d_forward, conv2d_forward_np)
register("conv2d_backward_input", conv2d_backward_input, conv2d_backward_input_np)
register("conv2d_backward_weight", conv2d_backward_weight, conv2d_backward_weight_np)
