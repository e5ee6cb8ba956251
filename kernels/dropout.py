"""Dropout with masks hashed from a counter-based generator, so a mask depends only on the key.

    x, y, grad, dx   any shape, C-contiguous (element dropout: flat views)
                     (R, S) for channel dropout: R = N*C channels of S = L or H*W values each
    mask             uint8, 1 = kept: x's shape for element dropout, (R,) for channel dropout
    seed, counter    the key (fastlayers.random.next_key()); p the drop probability in [0, 1]

Forward: y = x / (1 - p) where kept, 0 where dropped (inverted dropout; p = 1 gives zeros).
Backward: dx = grad / (1 - p) where kept, from the stored uint8 mask (a byte per element, never a
float copy of it).

The generator is splitmix64's output function applied to a counter: value k of stream (seed,
counter) is mix(base + (k + 1) * GOLDEN), base = mix(mix(seed) ^ counter). Each 64-bit value gives
two keep/drop decisions: its high 32 bits decide element 2k, its low 32 bits element 2k + 1. An
element is kept when its 32 bits are >= round(p * 2^32), so it is dropped with probability p up to
2^-33. A decision depends only on (seed, counter, index), so the mask is the same on any number of
threads, and the NumPy twin, which evaluates the same hash vectorised over an index array, gives
the same mask bit for bit.

Placement (data-parallel training, fastlayers.distributed): the forwards take ``offset``, ``stride``
and ``per_sample``, and then decision i of the local mask is decision
(offset + stride * (i // per_sample)) * per_sample + i % per_sample of the stream, i.e. the local
batch's sample t is sample offset + stride * t of a global batch with per_sample decisions a
sample. A rank holding samples rank, rank + world, ... of the global batch so draws exactly the
decisions one process draws for those samples; the defaults (0, 1, any) give decision i.
"""
import numpy as np
from numba import njit, prange

from kernels._registry import OPTIONS, compiled, register

GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1
_CHUNK = 2048  # 64-bit hash values per thread-owned chunk (4096 elements)
# Parallel thresholds for a 2-CPU machine with about one core of throughput: at (128, 32, 14, 14)
# the hashing forward gains nothing in parallel and the copy-and-scale passes (backward, channel
# dropout) lose, so both stay serial below 2^20 elements. Lower these on a machine with real cores.
_PAR_HASH = 1 << 20
_PAR_COPY = 1 << 20


def _mix_int(z):
    """splitmix64's output function on a Python int (used once per key)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def stream_base(seed, counter):
    """The base of the hash stream for key (seed, counter), as a uint64."""
    return np.uint64(_mix_int(_mix_int(int(seed)) ^ (int(counter) & _MASK64)))


def drop_threshold(p):
    """32-bit values below this are dropped: round(p * 2^32), as a uint64 (2^32 for p = 1)."""
    return np.uint64(int(round(float(p) * 4294967296.0)))


def keep_scale(p):
    """The factor applied to kept values, 1 / (1 - p) (0 for p = 1, when nothing is kept)."""
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


# ----------------------------------------------------------------------------------------- NumPy twins

def _hash_np(base, k):
    """splitmix64's value k of the stream at ``base`` (k: uint64 array)."""
    with np.errstate(over="ignore"):
        z = base + (k + np.uint64(1)) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def is_placed(offset, stride):
    """Whether a placement maps local decisions elsewhere than onto themselves."""
    return offset != 0 or stride != 1


def keep_mask_np(n, p, seed, counter, offset=0, stride=1, per_sample=1):
    """The uint8 keep mask of ``n`` decisions for key (seed, counter), vectorised (placement:
    see the header)."""
    base = stream_base(seed, counter)
    if is_placed(offset, stride):
        i = np.arange(n, dtype=np.uint64)
        k_ = np.uint64(per_sample)
        g = (np.uint64(offset) + np.uint64(stride) * (i // k_)) * k_ + i % k_
        z = _hash_np(base, g >> np.uint64(1))
        bits = np.where(g & np.uint64(1), z & np.uint64(0xFFFFFFFF), z >> np.uint64(32))
        return (bits >= drop_threshold(p)).astype(np.uint8)
    z = _hash_np(base, np.arange((n + 1) // 2, dtype=np.uint64))
    bits = np.empty(2 * z.size, np.uint64)
    bits[0::2] = z >> np.uint64(32)
    bits[1::2] = z & np.uint64(0xFFFFFFFF)
    return (bits[:n] >= drop_threshold(p)).astype(np.uint8)


def dropout_forward_np(x, p, seed, counter, offset=0, stride=1, per_sample=1):
    mask = keep_mask_np(x.size, p, seed, counter, offset, stride, per_sample).reshape(x.shape)
    y = np.where(mask != 0, x * x.dtype.type(keep_scale(p)), x.dtype.type(0))
    return y, mask


def dropout_backward_np(grad, mask, p):
    return np.where(mask != 0, grad * grad.dtype.type(keep_scale(p)), grad.dtype.type(0))


def dropout_channels_forward_np(x, p, seed, counter, offset=0, stride=1, per_sample=1):
    mask = keep_mask_np(x.shape[0], p, seed, counter, offset, stride, per_sample)
    y = np.where(mask[:, None] != 0, x * x.dtype.type(keep_scale(p)), x.dtype.type(0))
    return y, mask


def dropout_channels_backward_np(grad, mask, p):
    return np.where(mask[:, None] != 0, grad * grad.dtype.type(keep_scale(p)), grad.dtype.type(0))


# ---------------------------------------------------------------------------------------- Numba kernels

@njit(inline="always", **OPTIONS)
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


@njit(**OPTIONS)
def _hash_chunk(base, k0, k1, threshold, mask):
    # Decisions of hash values k0 <= k < k1 into mask[2*k - 2*k0 ...] (mask covers those values).
    golden = np.uint64(GOLDEN)
    one = np.uint64(1)
    low = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    for k in range(k0, k1):
        z = _mix(base + (np.uint64(k) + one) * golden)
        j = 2 * (k - k0)
        mask[j] = np.uint8((z >> s32) >= threshold)
        mask[j + 1] = np.uint8((z & low) >= threshold)


@njit(**OPTIONS)
def _hash_span(base, g0, threshold, mask):
    # Decisions of stream decisions g0 .. g0 + mask.size - 1 into mask (decision 2k is the high
    # half of value k, 2k + 1 its low half): one hash per pair, whatever g0's parity.
    golden = np.uint64(GOLDEN)
    one = np.uint64(1)
    low = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    n = mask.size
    j = 0
    if g0 % 2 == 1 and n > 0:
        z = _mix(base + (np.uint64(g0 // 2) + one) * golden)
        mask[0] = np.uint8((z & low) >= threshold)
        j = 1
    k = (g0 + j) // 2
    while j + 1 < n:
        z = _mix(base + (np.uint64(k) + one) * golden)
        mask[j] = np.uint8((z >> s32) >= threshold)
        mask[j + 1] = np.uint8((z & low) >= threshold)
        j += 2
        k += 1
    if j < n:
        z = _mix(base + (np.uint64(k) + one) * golden)
        mask[j] = np.uint8((z >> s32) >= threshold)


@compiled(parallel_min=_PAR_HASH)
def _dropout_placed(x, y, mask, base, threshold, scale, offset, stride):
    # x, y, mask: (T, K), sample t's K decisions are stream decisions (offset + stride t) K ...
    # (offset + stride t) K + K - 1. Thread owns sample t: y[t], mask[t].
    nt, nk = x.shape
    zero = x.dtype.type(0)
    sc = x.dtype.type(scale)
    for t in prange(nt):
        ms = mask[t]
        _hash_span(base, (offset + stride * t) * nk, threshold, ms)
        xs = x[t]
        ys = y[t]
        for i in range(nk):
            v = xs[i] * sc
            ys[i] = v if ms[i] != 0 else zero


@compiled(parallel_min=_PAR_HASH)
def _dropout_flat(x, y, mask, base, threshold, scale):
    # x, y, mask: (n,). Thread owns chunk b: elements [2*_CHUNK*b, 2*_CHUNK*(b+1)) of y and mask.
    n = x.size
    npairs = (n + 1) // 2
    zero = x.dtype.type(0)
    sc = x.dtype.type(scale)
    for b in prange((npairs + _CHUNK - 1) // _CHUNK):
        k0 = b * _CHUNK
        k1 = min(npairs, k0 + _CHUNK)
        e0 = 2 * k0
        e1 = min(n, 2 * k1)
        m = np.empty(2 * (k1 - k0), np.uint8)
        _hash_chunk(base, k0, k1, threshold, m)
        xs = x[e0:e1]
        ys = y[e0:e1]
        ms = mask[e0:e1]
        for i in range(e1 - e0):
            keep = m[i]
            ms[i] = keep
            v = xs[i] * sc
            ys[i] = v if keep != 0 else zero


@compiled(parallel_min=_PAR_COPY)
def _dropout_channels(x, y, mask, base, threshold, scale, offset, stride, per_sample):
    # x, y: (R, S); mask: (R,) filled by one serial hash pass first (placed as the header says
    # when (offset, stride) is not (0, 1)). Then thread owns row r of y.
    if offset == 0 and stride == 1:
        npairs = (x.shape[0] + 1) // 2
        m = np.empty(2 * npairs, np.uint8)
        _hash_chunk(base, 0, npairs, threshold, m)
        mask[:] = m[:x.shape[0]]
    else:
        for t in range(x.shape[0] // per_sample):
            _hash_span(base, (offset + stride * t) * per_sample, threshold,
                       mask[t * per_sample:(t + 1) * per_sample])
    zero = x.dtype.type(0)
    sc = x.dtype.type(scale)
    for r in prange(x.shape[0]):
        xs = x[r]
        ys = y[r]
        if mask[r] != 0:
            for i in range(xs.size):
                ys[i] = xs[i] * sc
        else:
            for i in range(xs.size):
                ys[i] = zero


@compiled(parallel_min=_PAR_COPY)
def _dropout_grad_flat(grad, mask, dx, scale):
    # grad, mask, dx: (n,). Thread owns chunk b of dx.
    n = grad.size
    zero = grad.dtype.type(0)
    sc = grad.dtype.type(scale)
    step = 2 * _CHUNK
    for b in prange((n + step - 1) // step):
        e0 = b * step
        e1 = min(n, e0 + step)
        gs = grad[e0:e1]
        ms = mask[e0:e1]
        ds = dx[e0:e1]
        for i in range(e1 - e0):
            v = gs[i] * sc
            ds[i] = v if ms[i] != 0 else zero


@compiled(parallel_min=_PAR_COPY)
def _dropout_grad_channels(grad, mask, dx, scale):
    # grad, dx: (R, S); mask: (R,). Thread owns row r of dx.
    zero = grad.dtype.type(0)
    sc = grad.dtype.type(scale)
    for r in prange(grad.shape[0]):
        gs = grad[r]
        ds = dx[r]
        if mask[r] != 0:
            for i in range(gs.size):
                ds[i] = gs[i] * sc
        else:
            for i in range(gs.size):
                ds[i] = zero


def dropout_forward(x, p, seed, counter, offset=0, stride=1, per_sample=1):
    y = np.empty_like(x)
    mask = np.empty(x.shape, np.uint8)
    if is_placed(offset, stride):
        _dropout_placed(x.reshape(-1, per_sample), y.reshape(-1, per_sample),
                        mask.reshape(-1, per_sample), stream_base(seed, counter),
                        drop_threshold(p), keep_scale(p), int(offset), int(stride))
        return y, mask
    _dropout_flat(x.reshape(-1), y.reshape(-1), mask.reshape(-1), stream_base(seed, counter),
                  drop_threshold(p), keep_scale(p))
    return y, mask


def dropout_backward(grad, mask, p):
    dx = np.empty_like(grad)
    _dropout_grad_flat(grad.reshape(-1), mask.reshape(-1), dx.reshape(-1), keep_scale(p))
    return dx


def dropout_channels_forward(x, p, seed, counter, offset=0, stride=1, per_sample=1):
    y = np.empty_like(x)
    mask = np.empty(x.shape[0], np.uint8)
    _dropout_channels(x, y, mask, stream_base(seed, counter), drop_threshold(p), keep_scale(p),
                      int(offset), int(stride), int(per_sample))
    return y, mask


def dropout_channels_backward(grad, mask, p):
    dx = np.empty_like(grad)
    _dropout_grad_channels(grad, mask, dx, keep_scale(p))
    return dx


register("dropout_forward", dropout_forward, dropout_forward_np)
register("dropout_backward", dropout_backward, dropout_backward_np)
register("dropout_channels_forward", dropout_channels_forward, dropout_channels_forward_np)
register("dropout_channels_backward", dropout_channels_backward, dropout_channels_backward_np)
