"""Batch augmentation: random crops with zero padding and random horizontal flips, per sample.

    x        (N, C, H, W) float32 or float64, C-contiguous: a batch of images
    out      random_crop: (N, C, SH, SW); random_hflip: x's shape; never x itself
    pad      zero padding on every side before cropping (>= 0)
    p        the probability of flipping a sample, in [0, 1]
    seed, counter    the key of this call (fastlayers.transforms keeps one stream per transform)
    offset, stride   placement: sample t of the batch is sample offset + stride * t of the global
                     batch (fastlayers.random.sample_placement; (0, 1) in one process)

Sample t draws one 64-bit value, value g = offset + stride * t of the splitmix64 stream (seed,
counter) that dropout masks use (kernels/dropout.py). A crop's top row is
floor(hi32 * (H + 2 pad - SH + 1) / 2^32) and its left column the same of lo32 with the width, in
padded coordinates, as ``torchvision.transforms.RandomCrop(size, padding)``; a sample is flipped
when hi32 < round(p * 2^32). A draw depends only on (seed, counter, g): the same on any thread
count, on any number of ranks, and in the NumPy twins and the PyTorch twin of the speed run, which
evaluate the same hash vectorised (:func:`crop_origins_np`, :func:`flip_decisions_np`).
"""
import numpy as np
from numba import njit, prange

from kernels._registry import OPTIONS, compiled, register
from kernels.dropout import GOLDEN, _hash_np, _mix, drop_threshold, stream_base

# Parallel from 2^18 output elements: a training batch of 28x28 images (128 x 784) is a
# memory-bound copy, faster serial beside BLAS's threads.
PAR_MIN = 1 << 18
_LOW = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def _draws_np(n, seed, counter, offset, stride):
    """The 64-bit value of each of the batch's ``n`` samples."""
    g = np.uint64(offset) + np.uint64(stride) * np.arange(n, dtype=np.uint64)
    return _hash_np(stream_base(seed, counter), g)


def crop_origins_np(n, spans, seed, counter, offset=0, stride=1):
    """(top, left) int64 arrays in padded coordinates: ``spans`` = (rows, columns) of possible
    origins, H + 2 pad - SH + 1 and W + 2 pad - SW + 1."""
    z = _draws_np(n, seed, counter, offset, stride)
    top = ((z >> _S32) * np.uint64(spans[0])) >> _S32
    left = ((z & _LOW) * np.uint64(spans[1])) >> _S32
    return top.astype(np.int64), left.astype(np.int64)


def flip_decisions_np(n, p, seed, counter, offset=0, stride=1):
    """A bool array: which of the ``n`` samples are flipped."""
    return (_draws_np(n, seed, counter, offset, stride) >> _S32) < drop_threshold(p)


def random_crop_np(x, out, pad, seed, counter, offset=0, stride=1):
    n, _, h, w = x.shape
    sh, sw = out.shape[2:]
    top, left = crop_origins_np(n, (h + 2 * pad - sh + 1, w + 2 * pad - sw + 1), seed, counter,
                                offset, stride)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = top[:, None] + np.arange(sh)            # (N, SH)
    cols = left[:, None] + np.arange(sw)           # (N, SW)
    # advanced indices around a slice: the result is (N, SH, SW, C)
    picked = padded[np.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    out[...] = picked.transpose(0, 3, 1, 2)


def random_hflip_np(x, out, p, seed, counter, offset=0, stride=1):
    flip = flip_decisions_np(x.shape[0], p, seed, counter, offset, stride)
    out[...] = np.where(flip[:, None, None, None], x[..., ::-1], x)


@njit(inline="always", **OPTIONS)
def _draw(base, g):
    return _mix(base + (np.uint64(g) + np.uint64(1)) * np.uint64(GOLDEN))


@compiled(parallel_min=PAR_MIN)
def _random_crop(out, x, pad, base, offset, stride):
    # Thread owns sample t of out. Output column j reads input column j + left - pad: the columns
    # [j0, j1) that land inside the image are copied, the rest are zeros.
    n, nc, h, w = x.shape
    sh, sw = out.shape[2], out.shape[3]
    span_h = np.uint64(h + 2 * pad - sh + 1)
    span_w = np.uint64(w + 2 * pad - sw + 1)
    zero = out.dtype.type(0)
    for t in prange(n):
        z = _draw(base, offset + stride * t)
        top = np.int64(((z >> _S32) * span_h) >> _S32) - pad
        left = np.int64(((z & _LOW) * span_w) >> _S32) - pad
        j0 = min(sw, max(0, -left))
        j1 = max(j0, min(sw, w - left))
        for c in range(nc):
            for i in range(sh):
                dst = out[t, c, i]
                src_row = i + top
                if src_row < 0 or src_row >= h:
                    for j in range(sw):
                        dst[j] = zero
                    continue
                src = x[t, c, src_row]
                for j in range(j0):
                    dst[j] = zero
                for j in range(j0, j1):
                    dst[j] = src[j + left]
                for j in range(j1, sw):
                    dst[j] = zero


def random_crop(x, out, pad, seed, counter, offset=0, stride=1):
    _random_crop(out, x, pad, stream_base(seed, counter), offset, stride)


@compiled(parallel_min=PAR_MIN)
def _random_hflip(out, x, threshold, base, offset, stride):
    # Thread owns sample t of out.
    n, nc, h, w = x.shape
    for t in prange(n):
        flip = (_draw(base, offset + stride * t) >> _S32) < threshold
        for c in range(nc):
            for i in range(h):
                src = x[t, c, i]
                dst = out[t, c, i]
                if flip:
                    for j in range(w):
                        dst[j] = src[w - 1 - j]
                else:
                    for j in range(w):
                        dst[j] = src[j]


def random_hflip(x, out, p, seed, counter, offset=0, stride=1):
    _random_hflip(out, x, drop_threshold(p), stream_base(seed, counter), offset, stride)


register("random_crop", random_crop, random_crop_np)
register("random_hflip", random_hflip, random_hflip_np)
