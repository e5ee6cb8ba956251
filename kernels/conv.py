"""2-D convolution (cross-correlation, as PyTorch's conv2d): forward, input gradient, weight+bias
gradient, with stride, zero padding, dilation and groups.

    x (N, C, H, W)   w (O, C / G, KH, KW)   b (O,) or None   y, grad (N, O, OH, OW)
    OH = (H + top + bottom - dh (KH - 1) - 1) // sh + 1        (OW likewise)

    Output channel o belongs to group g = o // (O / G) and reads input channels
    c = g C / G + c', c' < C / G (G = groups; G = 1 is the dense convolution):
    y[n, o, i, j]  = b[o] + sum_{c', ky, kx} w[o, c', ky, kx] * xp[n, c, i sh + ky dh, j sw + kx dw]
    dxp[n, c, ...] += w[o, c', ky, kx] * grad[n, o, i, j]  at the same positions (dx = dxp cropped)
    dw[o, c', ky, kx] += sum_{n, i, j} grad[n, o, i, j] * xp[n, c, i sh + ky dh, j sw + kx dw]
    db[o]             += sum_{n, i, j} grad[n, o, i, j]

where xp is x zero-padded. stride and dilation are (h, w) pairs of ints; padding is a pair (ph, pw),
the same on both sides, or a 4-tuple (top, bottom, left, right) (PyTorch's padding='same' puts the
odd one on the bottom and right).

How the compiled path is fast (NOTES.md: a direct kernel beats im2col + BLAS for 3x3):
- Stride 1 runs on the *flattened padded plane*. With the input padded to (Hp, Wp), output pixel
  (i, j) and tap (ky, kx) read the flat index  i Wp + j + (ky dh Wp + kx dw),  so one tap is a
  shifted contiguous slice of the plane, and the whole output plane is one long contiguous loop of
  L = (OH - 1) Wp + OW steps (the Wp - OW columns between rows are computed and thrown away). That
  loop vectorises even at 14x14, where a row-by-row loop of 14 would not.
- Each loaded input vector is reused across 4 output channels (of one group), and for 3-wide
  kernels the 3 taps of a row are summed in one expression, so each accumulator is loaded and
  stored once per 3 multiply-adds. A last block of fewer than 4 channels runs channel by channel
  (no wasted work).
- The input gradient at stride 1 *is* a stride-1 correlation of the (re-padded) output gradient with
  the flipped kernel, each group's block transposed, so it runs on the same forward kernel; at
  stride s the gradient is first spread onto a zero grid s times finer ("zero-upsampled"), then the
  same.
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
- A depthwise convolution (G = C: one input channel per group, any channel multiplier M = O / C)
  has kernels of its own (``_dw_*``): there is no channel sum to share loads across, so a thread
  owns whole (n, c) planes, pads each once into its own buffer and runs its M output planes (or,
  for the input gradient, sums its M gradient planes) as one flattened-plane loop per kernel row;
  the weight gradient lays each gradient plane on the padded input's grid (strided when the
  convolution is) and takes one dot product per tap.
"""
import numba
import numpy as np
from numba import njit, prange

from kernels import _loops, _vmath
from kernels._registry import OPTIONS, compiled, register


def out_size(size, k, s, p, d):
    """Output length along one axis (PyTorch's formula, floor mode), padding p on both sides."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def sides(padding):
    """(top, bottom, left, right) of ``padding``: a pair (ph, pw) or already a 4-tuple."""
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def _out_hw(x_shape, w_shape, stride, padding, dilation):
    top, bottom, left, right = sides(padding)
    (kh, kw), (sh, sw), (dh, dw) = w_shape[2:], stride, dilation
    return ((x_shape[2] + top + bottom - dh * (kh - 1) - 1) // sh + 1,
            (x_shape[3] + left + right - dw * (kw - 1) - 1) // sw + 1)


# ----------------------------------------------------------------------------------------- NumPy twins
# A loop over the KH*KW kernel offsets, each one a tensordot over channels on a strided view of the
# padded input: the plain vectorised NumPy convolution, the baseline. With groups, each tap is a
# batched matmul over the groups instead (the channels reshaped to (G, C / G)).

def _pad_np(x, padding):
    top, bottom, left, right = sides(padding)
    if not (top or bottom or left or right):
        return x
    h, w = x.shape[-2:]
    xp = np.zeros(x.shape[:-2] + (h + top + bottom, w + left + right), x.dtype)
    xp[..., top:top + h, left:left + w] = x
    return xp


def _window_np(a, ky, kx, oh, ow, stride, dilation):
    (sh, sw), (dh, dw) = stride, dilation
    y0, x0 = ky * dh, kx * dw
    return a[..., y0:y0 + sh * (oh - 1) + 1:sh, x0:x0 + sw * (ow - 1) + 1:sw]


def _by_group(a, groups):
    """a (N, C, ...) viewed as (N, G, C / G, ...)."""
    return a.reshape((a.shape[0], groups, a.shape[1] // groups) + a.shape[2:])


def _group_matmul(a, b):
    """(G, I, K) @ (N, G, K, P) -> (N, G, I, P); for K = 1 (depthwise) a broadcast product, which
    NumPy runs far faster than a stack of rank-1 matmuls."""
    return a * b if a.shape[-1] == 1 else np.matmul(a, b)


def conv2d_forward_np(x, w, b, stride, padding, dilation, groups=1):
    kh, kw = w.shape[2:]
    oh, ow = _out_hw(x.shape, w.shape, stride, padding, dilation)
    xp = _pad_np(x, padding)
    if groups > 1:
        wg = _by_group(w[None], groups)[0]                        # (G, O / G, C / G, KH, KW)
        xg = _by_group(xp, groups)
        acc = np.zeros((x.shape[0], groups, wg.shape[1], oh * ow), x.dtype)
        for ky in range(kh):
            for kx in range(kw):
                win = _window_np(xg, ky, kx, oh, ow, stride, dilation)
                acc += _group_matmul(wg[..., ky, kx], win.reshape(win.shape[:3] + (oh * ow,)))
        y = acc.reshape(x.shape[0], w.shape[0], oh, ow)
        if b is not None:
            y += b[:, None, None]
        return y
    acc = np.zeros((x.shape[0], oh, ow, w.shape[0]), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            acc += np.tensordot(_window_np(xp, ky, kx, oh, ow, stride, dilation), w[:, :, ky, kx],
                                axes=([1], [1]))
    if b is not None:
        acc += b
    return np.ascontiguousarray(acc.transpose(0, 3, 1, 2))


def conv2d_backward_input_np(grad, w, x_shape, stride, padding, dilation, groups=1):
    n, c, h, wd = x_shape
    kh, kw = w.shape[2:]
    top, bottom, left, right = sides(padding)
    oh, ow = grad.shape[2:]
    if groups > 1:
        wg = _by_group(w[None], groups)[0].transpose(0, 2, 1, 3, 4)   # (G, C / G, O / G, KH, KW)
        gg = _by_group(grad, groups).reshape(n, groups, wg.shape[2], oh * ow)
        dxp = np.zeros((n, groups, c // groups, h + top + bottom, wd + left + right), grad.dtype)
        for ky in range(kh):
            for kx in range(kw):
                win = _window_np(dxp, ky, kx, oh, ow, stride, dilation)
                win += _group_matmul(wg[..., ky, kx], gg).reshape(win.shape)
        return np.ascontiguousarray(dxp.reshape(n, c, h + top + bottom, wd + left + right)
                                    [:, :, top:top + h, left:left + wd])
    dxp = np.zeros((n, h + top + bottom, wd + left + right, c), grad.dtype)   # channels last
    view = dxp.transpose(0, 3, 1, 2)
    for ky in range(kh):
        for kx in range(kw):
            win = _window_np(view, ky, kx, oh, ow, stride, dilation).transpose(0, 2, 3, 1)
            win += np.tensordot(grad, w[:, :, ky, kx], axes=([1], [0]))
    return np.ascontiguousarray(view[:, :, top:top + h, left:left + wd])


def conv2d_backward_weight_np(grad, x, stride, padding, dilation, dw, db, groups=1):
    kh, kw = dw.shape[2:]
    n, _, oh, ow = grad.shape
    xp = _pad_np(x, padding)
    if groups > 1:
        gg = _by_group(grad, groups).reshape(n, groups, -1, oh * ow)
        xg = _by_group(xp, groups)
        dwg = _by_group(dw[None], groups)[0]                 # a view of dw: (G, O / G, C / G, ...)
        for ky in range(kh):
            for kx in range(kw):
                win = _window_np(xg, ky, kx, oh, ow, stride, dilation)
                win = win.reshape(win.shape[:3] + (oh * ow,))
                dwg[..., ky, kx] += np.matmul(gg, win.transpose(0, 1, 3, 2)).sum(axis=0)
    else:
        for ky in range(kh):
            for kx in range(kw):
                dw[:, :, ky, kx] += np.tensordot(
                    grad, _window_np(xp, ky, kx, oh, ow, stride, dilation),
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
def _corr_s1(x, top, left, hp, wp, w4, b, has_bias, y, dh, dw, nchunk, groups):
    # Valid, stride-1 correlation of x placed at (top, left) in a zero (Hp, Wp) frame (top/left may
    # be negative: x is then cropped). x (N, C, H, W); w4 (G O4, C / G, KH, KW): each group's O / G
    # rows rounded up to O4, a multiple of 4, with zero rows (see _blocked4); b (G O4,);
    # y (N, O, OH, OW), OH = Hp - dh (KH-1), OW alike. A block of 4 rows of w4 lies in one group
    # and reads its C / G input planes.
    # Samples are split into nchunk chunks (a few per thread); a thread owns a chunk: it pads each
    # sample into its own buffer (so the padded sample stays in cache for every output channel, and
    # no padded copy of the batch is written; the zero border is written once per chunk), and
    # writes y[n] of its samples only.
    n_, c_ = x.shape[0], x.shape[1]
    cg, kh, kw = w4.shape[1], w4.shape[2], w4.shape[3]
    o_, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    og = o_ // groups
    nbg = w4.shape[0] // groups // 4           # blocks per group
    nblk = groups * nbg
    length = ((oh - 1) * wp + ow + _loops.VEC - 1) // _loops.VEC * _loops.VEC
    zero = y.dtype.type(0)
    for chunk in prange(nchunk):
        xf = np.zeros((c_, hp * wp + _loops.VEC), dtype=y.dtype)
        acc = np.empty((4, length), dtype=y.dtype)
        a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
        for n in range(chunk * n_ // nchunk, (chunk + 1) * n_ // nchunk):
            _place(x[n], xf, 0, top, left, hp, wp)
            for blk in range(nblk):
                grp = blk // nbg
                r0 = blk * 4                              # the block's first row of w4 and b
                o0 = grp * og + (blk - grp * nbg) * 4     # its first output channel
                c0 = grp * cg                             # its group's first input plane
                b0 = b[r0] if has_bias else zero
                b1 = b[r0 + 1] if has_bias else zero
                b2 = b[r0 + 2] if has_bias else zero
                b3 = b[r0 + 3] if has_bias else zero
                for j in range(length):
                    a0[j] = b0
                    a1[j] = b1
                    a2[j] = b2
                    a3[j] = b3
                nrem = min(4, grp * og + og - o0)
                if nrem < 4:
                    for k in range(nrem):
                        a = acc[k]
                        for c in range(cg):
                            plane = xf[c0 + c]
                            for ky in range(kh):
                                for kx in range(kw):
                                    off = ky * dh * wp + kx * dw
                                    s = plane[off:off + length]
                                    wv = w4[r0 + k, c, ky, kx]
                                    for j in range(length):
                                        a[j] += wv * s[j]
                for c in range(cg if nrem == 4 else 0):
                    plane = xf[c0 + c]
                    for ky in range(kh):
                        base = ky * dh * wp
                        if kw == 3:
                            # The three taps of a kernel row at once (a last block of fewer
                            # than 4 channels goes one by one above).
                            _loops.fma4x3(a0, a1, a2, a3, plane[base:base + length],
                                    plane[base + dw:base + dw + length],
                                    plane[base + 2 * dw:base + 2 * dw + length],
                                    w4[r0, c, ky], w4[r0 + 1, c, ky], w4[r0 + 2, c, ky],
                                    w4[r0 + 3, c, ky], 0, length)
                        else:
                            for kx in range(kw):
                                off = base + kx * dw
                                _loops.fma4x1(a0, a1, a2, a3, plane[off:off + length],
                                        w4[r0, c, ky, kx], w4[r0 + 1, c, ky, kx],
                                        w4[r0 + 2, c, ky, kx], w4[r0 + 3, c, ky, kx], length)
                for k in range(nrem):
                    src, dst = acc[k], y[n, o0 + k]
                    for i in range(oh):
                        row = dst[i]
                        part = src[i * wp:i * wp + ow]
                        for j in range(ow):
                            row[j] = part[j]


@compiled(parallel_min=1 << 14, fastmath=("contract",))
def _conv_general(xp, w, b, has_bias, y, sh, sw, dh, dw, groups):
    # Any stride, already padded input. xp (N, C, Hp, Wp), w (O, C / G, KH, KW), y (N, O, OH, OW).
    # Thread owns plane (n, o) of y.
    n_ = xp.shape[0]
    o_, cg, kh, kw = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    og = o_ // groups
    for t in prange(n_ * o_):
        n, o = t // o_, t % o_
        c0 = o // og * cg
        bias = b[o] if has_bias else y.dtype.type(0)
        for i in range(oh):
            row = y[n, o, i]
            for j in range(ow):
                row[j] = bias
            for c in range(cg):
                for ky in range(kh):
                    xrow = xp[n, c0 + c, i * sh + ky * dh]
                    for kx in range(kw):
                        wv = w[o, c, ky, kx]
                        start = kx * dw
                        for j in range(ow):
                            row[j] += wv * xrow[start + j * sw]


@compiled(parallel_min=1 << 14, fastmath=("contract",))
def _wgrad_general(grad, xp, dw_, db, has_bias, sh, sw, dh, dwl, groups):
    # Any stride. grad (N, O, OH, OW), xp (N, C, Hp, Wp) padded input; accumulates into dw_
    # (O, C / G, KH, KW) and db. Thread owns the pair (o, c): writes dw_[o, c] only (and db[o] when
    # c == 0).
    n_, o_, oh, ow = grad.shape
    cg, kh, kw = dw_.shape[1], dw_.shape[2], dw_.shape[3]
    og = o_ // groups
    for t in prange(o_ * cg):
        o, c = t // cg, t % cg
        xc = o // og * cg + c
        for ky in range(kh):
            for kx in range(kw):
                total = 0.0
                for n in range(n_):
                    for i in range(oh):
                        grow = grad[n, o, i]
                        xrow = xp[n, xc, i * sh + ky * dh]
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
def _wgrad_s1(grad, x, top, left, hp, wp, dw_, db, has_bias, dh, dwl, nchunk, group, groups):
    # Stride-1 weight gradient. grad (N, O, OH, OW); x (N, C, H, W), placed at (top, left) in a zero
    # (Hp, Wp) frame; accumulates into dw_ (O, C / G, KH, KW) and db (O,).
    # On the flattened padded plane (see _corr_s1) tap (ky, kx) of every output pixel is one shifted
    # contiguous slice of the input plane, so dw[o, c, ky, kx] is a sum of dot products of two
    # contiguous rows: the gradient of channel o laid on the plane's grid (zeros in the discarded
    # columns) and that slice. Each dot product runs in float32 and vectorises into running sums
    # ("reassoc": Numba keeps a sum's order otherwise and the loop runs one element at a time);
    # the results add up in float64. Output channels go in blocks of 4 and, for 3-wide kernels, the
    # 3 taps of a kernel row in one loop: 7 loads feed 12 multiply-adds. A last block of fewer than
    # 4 channels (of a group) computes its missing rows on zeros.
    # Samples are stacked ``group`` at a time into one tall plane, every ``period`` rows (the zero
    # rows between two samples are shared: the frames overlap where both are zero, and no valid
    # output's taps reach the next sample), so one dot product covers the whole group, and the
    # reduction of its running sums that follows every loop is paid once a group instead of once a
    # sample (see _STACK_POSITIONS). The last group may be short: the buffers are cleared for it.
    # Output channel blocks are split into nchunk chunks; a thread owns a chunk: it writes dw_[o]
    # and db[o] of its channels only, and stacks the samples into its own buffer.
    n_, o_, oh, ow = grad.shape
    c_, h = x.shape[1], x.shape[2]
    cg, kh, kw = dw_.shape[1], dw_.shape[2], dw_.shape[3]
    period = max(h + max(top, hp - h - top), oh)
    size = ((group - 1) * period + hp) * wp + _loops.VEC
    og = o_ // groups
    nbg = (og + 3) // 4                        # blocks per group
    nblk = groups * nbg
    zero = dw_.dtype.type(0)
    for chunk in prange(nchunk):
        blk0, blk1 = chunk * nblk // nchunk, (chunk + 1) * nblk // nchunk
        xf = np.zeros((c_, size), dtype=x.dtype)
        g = np.zeros((blk1 - blk0, 4, size), dtype=dw_.dtype)
        acc = np.zeros((blk1 - blk0, 4, cg, kh, kw))
        bias = np.zeros((blk1 - blk0, 4))
        for n0 in range(0, n_, group):
            cnt = min(group, n_ - n0)
            if cnt < group:   # clear what the full groups left beyond the short one
                xf[:] = zero
                g[:] = zero
            length = (((cnt - 1) * period + oh - 1) * wp + ow + _loops.VEC - 1) // _loops.VEC * _loops.VEC
            for m in range(cnt):
                _place(x[n0 + m], xf, m * period, top, left, hp, wp)
            for blk in range(blk0, blk1):
                gb, ab = g[blk - blk0], acc[blk - blk0]
                grp = blk // nbg
                o0 = grp * og + (blk - grp * nbg) * 4
                c0 = grp * cg
                for k in range(min(4, grp * og + og - o0)):
                    row = gb[k]
                    for m in range(cnt):
                        for i in range(oh):
                            src = grad[n0 + m, o0 + k, i]
                            at = (m * period + i) * wp
                            dst = row[at:at + ow]
                            for j in range(ow):
                                dst[j] = src[j]
                    if has_bias:
                        bias[blk - blk0, k] += _vmath.sum64(row[:length])
                g0, g1, g2, g3 = gb[0], gb[1], gb[2], gb[3]
                for c in range(cg):
                    plane = xf[c0 + c]
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
            grp = blk // nbg
            o0 = grp * og + (blk - grp * nbg) * 4
            for k in range(min(4, grp * og + og - o0)):
                o = o0 + k
                dst, src = dw_[o], acc[blk - blk0, k]
                for c in range(cg):
                    for ky in range(kh):
                        for kx in range(kw):
                            dst[c, ky, kx] += src[c, ky, kx]
                if has_bias:
                    db[o] += bias[blk - blk0, k]


# ------------------------------------------------------------------------ depthwise (G = C)

@njit(inline="always", **OPTIONS)
def _spread(src, frame, top, left, sh, sw, hq, wq):
    # src (R, Q) lands in the flattened (Hq, Wq) frame at (top + r sh, left + q sw) (positions
    # outside the frame are dropped); the frame's other positions are left as they are (the same
    # positions are written at every call, so they stay zero). Stride 1 is _place's copy.
    if sh == 1 and sw == 1:
        _place(src.reshape((1,) + src.shape), frame.reshape((1, frame.size)), 0, top, left, hq,
               wq)
        return
    for r in range(src.shape[0]):
        fr = top + r * sh
        if fr < 0 or fr >= hq:
            continue
        srow = src[r]
        at = fr * wq + left
        for q in range(src.shape[1]):
            if 0 <= left + q * sw < wq:
                frame[at + q * sw] = srow[q]


@njit(inline="always", **OPTIONS)
def _taps3(acc, s0, s1, s2, w0, w1, w2, start, fresh):
    # acc[j] = (start if fresh else acc[j]) + w0 s0[j] + w1 s1[j] + w2 s2[j]: three taps, chained
    # FMAs, each accumulator loaded (or not) and stored once.
    if fresh:
        for j in range(acc.size):
            acc[j] = start + w0 * s0[j] + w1 * s1[j] + w2 * s2[j]
    else:
        for j in range(acc.size):
            acc[j] = acc[j] + w0 * s0[j] + w1 * s1[j] + w2 * s2[j]


@njit(inline="always", **OPTIONS)
def _plane_taps(frame, wp, kern, dh, dw, acc, fresh, start):
    # acc[j] (+)= sum_{ky, kx} kern[ky, kx] frame[ky dh Wp + kx dw + j], j < acc.size: a whole
    # flattened output plane, the three taps of a kernel row per pass for 3-wide kernels, one tap a
    # pass otherwise. With ``fresh`` acc starts from ``start`` instead of its contents: the first
    # kernel row's pass writes it (peeled off the loop over rows: a test inside that loop made
    # every pass 1.6x slower).
    kh, kw = kern.shape
    length = acc.size
    first = 0
    if fresh and kw == 3:
        _taps3(acc, frame[0:length], frame[dw:dw + length], frame[2 * dw:2 * dw + length],
               kern[0, 0], kern[0, 1], kern[0, 2], start, True)
        first = 1
    elif fresh:
        for j in range(length):
            acc[j] = start
    for ky in range(first, kh):
        base = ky * dh * wp
        if kw == 3:
            _taps3(acc, frame[base:base + length], frame[base + dw:base + dw + length],
                   frame[base + 2 * dw:base + 2 * dw + length], kern[ky, 0], kern[ky, 1],
                   kern[ky, 2], start, False)
            continue
        for kx in range(kw):
            wv = kern[ky, kx]
            s = frame[base + kx * dw:base + kx * dw + length]
            for j in range(length):
                acc[j] += wv * s[j]


@njit(inline="always", **OPTIONS)
def _unflatten(acc, wp, dst):
    # The flattened plane acc (rows Wp apart) into dst (OH, OW): its valid columns.
    for i in range(dst.shape[0]):
        row = dst[i]
        part = acc[i * wp:i * wp + dst.shape[1]]
        for j in range(dst.shape[1]):
            row[j] = part[j]


@compiled(parallel_min=1 << 12, fastmath=("contract",))
def _dw_forward(x, top, left, hp, wp, w, b, has_bias, y, sh, sw, dh, dw, nchunk):
    # Depthwise forward. x (N, C, H, W) placed at (top, left) in a zero (Hp, Wp) frame; w (C M, 1,
    # KH, KW); b (C M,); y (N, C M, OH, OW): output channel c M + k reads input plane c only.
    # The (n, c) planes are split into nchunk chunks; a thread owns a chunk: it pads each of its
    # planes once into its own frame (the zero border written once a chunk) and writes the M output
    # planes y[n, c M:(c + 1) M]. Stride 1 runs on the flattened frame (_plane_taps); other strides
    # row by row on the frame's 2-D view.
    n_, c_ = x.shape[0], x.shape[1]
    kh, kw = w.shape[2], w.shape[3]
    o_, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    m_ = o_ // c_
    unit = sh == 1 and sw == 1
    length = ((oh - 1) * wp + ow + _loops.VEC - 1) // _loops.VEC * _loops.VEC if unit else 0
    zero = y.dtype.type(0)
    tasks = n_ * c_
    for chunk in prange(nchunk):
        frame = np.zeros(hp * wp + _loops.VEC, dtype=y.dtype)
        grid = frame[:hp * wp].reshape((hp, wp))
        acc = np.empty(length, dtype=y.dtype)
        for t in range(chunk * tasks // nchunk, (chunk + 1) * tasks // nchunk):
            n, c = t // c_, t % c_
            _spread(x[n, c], frame, top, left, 1, 1, hp, wp)
            for k in range(m_):
                o = c * m_ + k
                bias = b[o] if has_bias else zero
                kern = w[o, 0]
                if unit:
                    _plane_taps(frame, wp, kern, dh, dw, acc, True, bias)
                    _unflatten(acc, wp, y[n, o])
                    continue
                for i in range(oh):
                    row = y[n, o, i]
                    for j in range(ow):
                        row[j] = bias
                    for ky in range(kh):
                        xrow = grid[i * sh + ky * dh]
                        for kx in range(kw):
                            wv = kern[ky, kx]
                            start = kx * dw
                            for j in range(ow):
                                row[j] += wv * xrow[start + j * sw]


@compiled(parallel_min=1 << 12, fastmath=("contract",))
def _dw_backward_input(g, top, left, hq, wq, wflip, dx, sh, sw, dh, dw, nchunk):
    # Depthwise input gradient: dx[n, c] = sum_k of the valid stride-1 correlation of gradient
    # plane g[n, c M + k], spread at (top + i sh, left + j sw) in a zero (Hq, Wq) frame, with the
    # flipped kernel wflip[c M + k, 0] (see conv2d_backward_input). g (N, C M, OH, OW); dx (N, C,
    # H, W), H = Hq - dh (KH - 1). The (n, c) planes are split into nchunk chunks; a thread owns a
    # chunk: it spreads its gradient planes into its own frame and writes dx[n, c] of its planes.
    n_, c_, h, wd = dx.shape
    m_ = g.shape[1] // c_
    length = ((h - 1) * wq + wd + _loops.VEC - 1) // _loops.VEC * _loops.VEC
    tasks = n_ * c_
    zero = dx.dtype.type(0)
    for chunk in prange(nchunk):
        frame = np.zeros(hq * wq + _loops.VEC, dtype=dx.dtype)
        acc = np.empty(length, dtype=dx.dtype)
        for t in range(chunk * tasks // nchunk, (chunk + 1) * tasks // nchunk):
            n, c = t // c_, t % c_
            for k in range(m_):
                o = c * m_ + k
                _spread(g[n, o], frame, top, left, sh, sw, hq, wq)
                _plane_taps(frame, wq, wflip[o, 0], dh, dw, acc, k == 0, zero)
            _unflatten(acc, wq, dx[n, c])


@compiled(parallel_min=1 << 12, fastmath=("contract", "reassoc"))
def _dw_wgrad(grad, x, top, left, hp, wp, dw_, db, has_bias, sh, sw, dh, dwl):
    # Depthwise weight gradient. grad (N, C M, OH, OW); x (N, C, H, W) placed at (top, left) in a
    # zero (Hp, Wp) frame; accumulates into dw_ (C M, 1, KH, KW) and db (C M,).
    # On the flattened frame, output pixel (i, j) sits at i sh Wp + j sw and its tap (ky, kx) reads
    # that index + ky dh Wp + kx dw: laid on that grid (zeros between), each gradient plane gives
    # dw[o, 0, ky, kx] as one dot product of two contiguous rows per tap, run in x's dtype in
    # running sums ("reassoc") and added up in float64: the 9 taps of a 3x3 kernel in one loop,
    # otherwise those of a kernel row (3 wide) or one tap a loop. The first loop also sums the
    # gradient for the bias (a loop of its own, after these, measured 2-3x slower).
    # Thread owns input channel c: it writes dw_ and db of output channels c M .. c M + M - 1.
    n_, o_, oh, ow = grad.shape
    c_ = x.shape[1]
    kh, kw = dw_.shape[2], dw_.shape[3]
    m_ = o_ // c_
    length = ((oh - 1) * sh * wp + (ow - 1) * sw + _loops.VEC) // _loops.VEC * _loops.VEC
    zero = dw_.dtype.type(0)
    r1, r2 = dh * wp, 2 * dh * wp
    for c in prange(c_):
        plane = np.zeros(hp * wp + _loops.VEC, dtype=x.dtype)
        gf = np.zeros(length, dtype=dw_.dtype)
        acc = np.zeros((m_, kh, kw))
        bias = np.zeros(m_)
        for n in range(n_):
            _spread(x[n, c], plane, top, left, 1, 1, hp, wp)
            for k in range(m_):
                _spread(grad[n, c * m_ + k], gf, 0, 0, sh, sw, oh * sh, wp)
                ak = acc[k]
                if kh == 3 and kw == 3:
                    s00, s01, s02 = (plane[0:length], plane[dwl:dwl + length],
                                     plane[2 * dwl:2 * dwl + length])
                    s10, s11, s12 = (plane[r1:r1 + length], plane[r1 + dwl:r1 + dwl + length],
                                     plane[r1 + 2 * dwl:r1 + 2 * dwl + length])
                    s20, s21, s22 = (plane[r2:r2 + length], plane[r2 + dwl:r2 + dwl + length],
                                     plane[r2 + 2 * dwl:r2 + 2 * dwl + length])
                    t00 = t01 = t02 = t10 = t11 = t12 = t20 = t21 = t22 = tb = zero
                    for j in range(length):
                        u = gf[j]
                        t00, t01, t02 = t00 + u * s00[j], t01 + u * s01[j], t02 + u * s02[j]
                        t10, t11, t12 = t10 + u * s10[j], t11 + u * s11[j], t12 + u * s12[j]
                        t20, t21, t22 = t20 + u * s20[j], t21 + u * s21[j], t22 + u * s22[j]
                        tb += u
                    _add3(ak[0], t00, t01, t02)
                    _add3(ak[1], t10, t11, t12)
                    _add3(ak[2], t20, t21, t22)
                    bias[k] += tb
                    continue
                for ky in range(kh):
                    base = ky * dh * wp
                    if kw == 3:
                        s0 = plane[base:base + length]
                        s1 = plane[base + dwl:base + dwl + length]
                        s2 = plane[base + 2 * dwl:base + 2 * dwl + length]
                        t0 = t1 = t2 = tb = zero
                        for j in range(length):
                            u = gf[j]
                            t0, t1, t2, tb = t0 + u * s0[j], t1 + u * s1[j], t2 + u * s2[j], tb + u
                        _add3(ak[ky], t0, t1, t2)
                        if ky == 0:
                            bias[k] += tb
                        continue
                    for kx in range(kw):
                        s = plane[base + kx * dwl:base + kx * dwl + length]
                        t0 = tb = zero
                        for j in range(length):
                            u = gf[j]
                            t0, tb = t0 + u * s[j], tb + u
                        ak[ky, kx] += t0
                        if ky == 0 and kx == 0:
                            bias[k] += tb
        for k in range(m_):
            o = c * m_ + k
            dst, src = dw_[o, 0], acc[k]
            for ky in range(kh):
                for kx in range(kw):
                    dst[ky, kx] += src[ky, kx]
            if has_bias:
                db[o] += bias[k]


# ------------------------------------------------------------------------------------ dispatch

def _depthwise(w, groups):
    """Whether the depthwise kernels run: one input channel per group (and more than one group)."""
    return groups > 1 and w.shape[1] == 1


def _chunks(n):
    """Chunks of the forward kernels' n tasks, a few per thread (any count gives the same
    result)."""
    return max(1, min(n, 2 * numba.get_num_threads()))


def _padded(x, padding):
    top, bottom, left, right = sides(padding)
    if not (top or bottom or left or right):
        return x
    n, c, h, wd = x.shape
    xp = np.empty((n, c, h + top + bottom, wd + left + right), x.dtype)
    _pad_into(x, xp, top, left)
    return xp


# _wgrad_s1 stacks enough samples that one dot product runs over about this many plane positions:
# 8 samples of 14x14 padded by 1, 2 of 28x28 (0.8x the time of one sample a loop at 14x14).
_STACK_POSITIONS = 2048


def _stack(x, padding):
    """Samples per group of _wgrad_s1 for input x padded by ``padding``."""
    top, bottom, left, right = sides(padding)
    n, _, h, wd = x.shape
    return max(1, min(n, _STACK_POSITIONS // ((h + top + bottom) * (wd + left + right))))


def _blocked4(w, b, groups):
    """w (O, C / G, KH, KW) with each group's O / G output channels padded with zero channels to a
    multiple of 4, and b likewise (zeros if None): (G O4, C / G, KH, KW) and (G O4,)."""
    og = w.shape[0] // groups
    og4 = (og + 3) // 4 * 4
    w4 = np.zeros((groups, og4) + w.shape[1:], w.dtype)
    w4[:, :og] = w.reshape((groups, og) + w.shape[1:])
    b4 = np.zeros((groups, og4), w.dtype)
    if b is not None:
        b4[:, :og] = b.reshape(groups, og)
    return w4.reshape((groups * og4,) + w.shape[1:]), b4.reshape(-1)


def _corr_valid_s1(x, top, left, hp, wp, w, b, dilation, groups):
    """Valid stride-1 correlation of x placed at (top, left) in a zero (hp, wp) frame."""
    kh, kw = w.shape[2:]
    dh, dw = dilation
    y = np.empty((x.shape[0], w.shape[0], hp - dh * (kh - 1), wp - dw * (kw - 1)), x.dtype)
    w4, b4 = _blocked4(w, b, groups)
    _corr_s1(x, top, left, hp, wp, w4, b4, b is not None, y, dh, dw, _chunks(x.shape[0]), groups)
    return y


def conv2d_forward(x, w, b, stride, padding, dilation, groups=1):
    top, bottom, left, right = sides(padding)
    hp, wp = x.shape[2] + top + bottom, x.shape[3] + left + right
    if _depthwise(w, groups):
        y = np.empty((x.shape[0], w.shape[0]) + _out_hw(x.shape, w.shape, stride, padding,
                                                         dilation), x.dtype)
        bias = b if b is not None else np.zeros(w.shape[0], x.dtype)
        _dw_forward(x, top, left, hp, wp, w, bias, b is not None, y, *stride, *dilation,
                    _chunks(x.shape[0] * x.shape[1]))
        return y
    if stride == (1, 1):
        return _corr_valid_s1(x, top, left, hp, wp, w, b, dilation, groups)
    xp = _padded(x, padding)
    y = np.empty((x.shape[0], w.shape[0]) + _out_hw(x.shape, w.shape, stride, padding, dilation),
                 x.dtype)
    bias = b if b is not None else np.zeros(w.shape[0], x.dtype)
    _conv_general(xp, w, bias, b is not None, y, *stride, *dilation, groups)
    return y


def _flipped(w, groups):
    """The input gradient's kernel: taps flipped and each group's (O / G, C / G) block transposed,
    (C, O / G, KH, KW)."""
    o, cg, kh, kw = w.shape
    wg = w.reshape(groups, o // groups, cg, kh, kw)[..., ::-1, ::-1]
    return np.ascontiguousarray(wg.transpose(0, 2, 1, 3, 4)).reshape(groups * cg, o // groups,
                                                                      kh, kw)


def conv2d_backward_input(grad, w, x_shape, stride, padding, dilation, groups=1):
    # dx[n, c, u, v] = sum w[o, c', ky, kx] * G[n, o, u + top - ky dh, v + left - kx dw], G the
    # gradient spread onto the stride-1 grid. Flipping the kernel turns that into a valid
    # correlation of G placed at (dh (KH - 1) - top, dw (KW - 1) - left) in a zero
    # (H + dh (KH-1), W + dw (KW-1)) frame.
    n, c, h, wd = x_shape
    kh, kw = w.shape[2:]
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    pad_top, _, pad_left, _ = sides(padding)
    top, left = eh - pad_top, ew - pad_left
    if _depthwise(w, groups):
        dx = np.empty(x_shape, grad.dtype)
        wflip = np.ascontiguousarray(w[:, :, ::-1, ::-1])
        _dw_backward_input(grad, top, left, h + eh, wd + ew, wflip, dx, *stride, *dilation,
                           _chunks(n * c))
        return dx
    wt = _flipped(w, groups)
    if stride == (1, 1):
        return _corr_valid_s1(grad, top, left, h + eh, wd + ew, wt, None, dilation, groups)
    gp = np.empty((n, w.shape[0], h + eh, wd + ew), grad.dtype)
    _upsample_pad_into(grad, gp, top, left, stride[0], stride[1])
    return _corr_valid_s1(gp, 0, 0, h + eh, wd + ew, wt, None, dilation, groups)


def conv2d_backward_weight(grad, x, stride, padding, dilation, dw, db, groups=1):
    has_bias = db is not None
    dbuf = db if has_bias else np.zeros(dw.shape[0], dw.dtype)
    top, bottom, left, right = sides(padding)
    hp, wp = x.shape[2] + top + bottom, x.shape[3] + left + right
    if _depthwise(dw, groups):
        _dw_wgrad(grad, x, top, left, hp, wp, dw, dbuf, has_bias, *stride, *dilation)
        return
    if stride == (1, 1):
        nblk = groups * ((dw.shape[0] // groups + 3) // 4)
        nchunk = min(nblk, numba.get_num_threads())   # any count gives the same result
        _wgrad_s1(grad, x, top, left, hp, wp, dw, dbuf, has_bias, *dilation, nchunk,
                  _stack(x, padding), groups)
        return
    _wgrad_general(grad, _padded(x, padding), dw, dbuf, has_bias, *stride, *dilation, groups)


register("conv2d_forward", conv2d_forward, conv2d_forward_np)
register("conv2d_backward_input", conv2d_backward_input, conv2d_backward_input_np)
register("conv2d_backward_weight", conv2d_backward_weight, conv2d_backward_weight_np)
