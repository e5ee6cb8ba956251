"""Embedding lookup: a gather forward and a scatter-add backward that owns weight rows.

    weight, dweight  (V, D) C-contiguous: V embeddings of D values; dweight accumulated into (+=)
    indices          (n,) int64, every value in [0, V) (the layer checks; the kernels do not)
    out, grad        (n, D) in weight's dtype: out[p] = weight[indices[p]]
    padding_idx      a row in [0, V) that receives no gradient, or -1 for none

backward:  dweight[r] += sum of grad[p] over the positions p with indices[p] == r (r != padding_idx)

Threads: the forward's thread owns output row p. The backward must not let two threads add into
one weight row, and positions that hit the same row may sit anywhere in the input. So it first
sorts the positions by row (a counting sort: serial, O(n + V), stable), which gives every row its
list of positions in increasing order; then a thread owns a block of weight rows and adds, for each
of its rows, the gradient rows of that row's positions in list order. Each row's sum is thus taken
in one fixed order whichever thread takes it: the result does not depend on the thread count or on
the blocks. Blocks split the sorted positions, not the rows, into nearly equal parts (at row
boundaries), so a few frequent rows (word frequencies are skewed) do not leave one thread all the
work.
"""
import numpy as np
from numba import prange

from kernels._registry import compiled, register

NO_PADDING = -1
BLOCKS = 64  # row blocks of the backward
# Parallel from 2^19 elements (of out, or of grad): memory-bound copies that gain little from a
# second thread on 2 shared CPUs (at (2048, 256) the parallel builds are no faster).
PAR_MIN = 1 << 19


# -------------------------------------------------------------------------------------- NumPy twins

def embedding_forward_np(weight, indices):
    return weight[indices]


def embedding_backward_np(grad, indices, padding_idx, dweight):
    keep = indices != padding_idx
    np.add.at(dweight, indices[keep], grad[keep])


# ------------------------------------------------------------------------------------ Numba kernels

@compiled(parallel_min=PAR_MIN)
def _gather(out, weight, indices):
    # out: (n, D). Thread owns row p of out.
    for p in prange(out.shape[0]):
        src = weight[indices[p]]
        dst = out[p]
        for j in range(dst.size):
            dst[j] = src[j]


@compiled(parallel_min=PAR_MIN)
def _scatter_add(grad, indices, padding_idx, dweight, nblocks):
    # grad: (n, D); dweight: (V, D). Thread owns block k of weight rows, rows[k]:rows[k + 1].
    n = indices.size
    v = dweight.shape[0]
    # Counting sort: start[r]:start[r + 1] of order are the positions that hit row r, increasing.
    start = np.zeros(v + 1, np.int64)
    for p in range(n):
        start[indices[p] + 1] += 1
    for r in range(v):
        start[r + 1] += start[r]
    fill = start[:v].copy()
    order = np.empty(n, np.int64)
    for p in range(n):
        r = indices[p]
        order[fill[r]] = p
        fill[r] += 1
    # Block k starts at the first row whose positions start at or after k n / nblocks.
    rows = np.empty(nblocks + 1, np.int64)
    for k in range(nblocks + 1):
        rows[k] = np.searchsorted(start, k * n // nblocks)
    for k in prange(nblocks):
        for r in range(rows[k], rows[k + 1]):
            if r == padding_idx:
                continue
            acc = dweight[r]
            for q in range(start[r], start[r + 1]):
                g = grad[order[q]]
                for j in range(acc.size):
                    acc[j] += g[j]


# ------------------------------------------------------------------------------ public entry points

def embedding_forward(weight, indices):
    out = np.empty((indices.size, weight.shape[1]), weight.dtype)
    if out.size:
        _gather(out, weight, indices)
    return out


def embedding_backward(grad, indices, padding_idx, dweight):
    if grad.size:
        _scatter_add(grad, indices, int(padding_idx), dweight, BLOCKS)


register("embedding_forward", embedding_forward, embedding_forward_np)
register("embedding_backward", embedding_backward, embedding_backward_np)
