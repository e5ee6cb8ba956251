"""A mini-batch of images: the rows of a dataset gathered and scaled to floats in one pass.

    images   (N, D) uint8, C-contiguous: the whole dataset, one flattened image per row
    rows     (B,) int64, every value in [0, N) (the DataLoader's permutation slices; not checked)
    out      (B, D) float32 or float64: out[i] = images[rows[i]] / divisor

The division (not a multiplication by 1 / divisor) gives NumPy's ``images[rows] / divisor`` to the
bit. NumPy takes two passes (a gather into a uint8 buffer, then a casting division); one compiled
pass reads each selected byte once and writes its float (about half the time at (128, 784)).
"""
import numpy as np
from numba import prange

from kernels._registry import compiled, register

# Parallel from 2^18 output elements: the speed run's evaluation batches (1000 x 784) but not its
# training batches (at most 128 x 784, memory-bound, faster serial beside BLAS's threads).
PAR_MIN = 1 << 18


def gather_scaled_np(images, rows, out, divisor):
    np.divide(images[rows], out.dtype.type(divisor), out=out)


@compiled(parallel_min=PAR_MIN)
def _gather_scaled(out, images, rows, divisor):
    # Thread owns row i of out.
    f = out.dtype.type
    d = f(divisor)
    for i in prange(out.shape[0]):
        src = images[rows[i]]
        dst = out[i]
        for j in range(dst.size):
            dst[j] = f(src[j]) / d


def gather_scaled(images, rows, out, divisor):
    _gather_scaled(out, images, rows, divisor)


register("gather_scaled", gather_scaled, gather_scaled_np)
