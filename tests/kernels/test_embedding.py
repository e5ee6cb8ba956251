"""Embedding kernels against their NumPy twins and a loop-by-loop reference, serial and parallel
builds, float32 and float64; the scatter-add's bits do not depend on the build, the blocks or the
thread count."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import embedding as emb
from tests.conftest import forced_build

BUILDS = ("serial", "parallel")


def _case(seed, v, d, n, dtype, skew=False):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((v, d)).astype(dtype)
    if skew:    # a few rows take most positions, as word frequencies do
        idx = np.minimum(rng.zipf(1.5, n) - 1, v - 1)
    else:
        idx = rng.integers(0, v, n)
    g = rng.standard_normal((n, d)).astype(dtype)
    return w, idx.astype(np.int64), g


def _reference_grad(g, idx, padding_idx, start):
    """start + the sum of grad rows per weight row, each row's sum in float64 (no kernel code)."""
    out = start.astype(np.float64)
    for p, r in enumerate(idx):
        if r != padding_idx:
            out[r] += g[p]
    return out


cases = dict(v=st.integers(1, 50), d=st.integers(1, 20), n=st.integers(0, 80),
             dtype=st.sampled_from([np.float32, np.float64]), kind=st.sampled_from(BUILDS),
             seed=st.integers(0, 2**16), skew=st.booleans())


@settings(max_examples=25, deadline=None)
@given(**cases)
def test_forward_gathers_rows(v, d, n, dtype, kind, seed, skew):
    w, idx, _ = _case(seed, v, d, n, dtype, skew)
    with forced_build(kind):
        out = emb.embedding_forward(w, idx)
    assert out.dtype == dtype and out.shape == (n, d)
    np.testing.assert_array_equal(out, emb.embedding_forward_np(w, idx))
    for p in range(n):
        np.testing.assert_array_equal(out[p], w[idx[p]])


@settings(max_examples=25, deadline=None)
@given(padded=st.booleans(), **cases)
def test_backward_matches_twin_and_reference(v, d, n, dtype, kind, seed, skew, padded):
    w, idx, g = _case(seed, v, d, n, dtype, skew)
    pad = int(idx[0]) if padded and n else emb.NO_PADDING     # a row that is hit, when padded
    start = np.random.default_rng(seed + 1).standard_normal((v, d)).astype(dtype)
    dw, dw2 = start.copy(), start.copy()
    with forced_build(kind):
        assert emb.embedding_backward(g, idx, pad, dw) is None
    emb.embedding_backward_np(g, idx, pad, dw2)
    # The twin adds the positions in order, one at a time, as the kernel does: the same bits.
    np.testing.assert_array_equal(dw, dw2)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, _reference_grad(g, idx, pad, start), **tol)
    if pad != emb.NO_PADDING:
        np.testing.assert_array_equal(dw[pad], start[pad])      # the padding row is untouched


def test_repeated_indices_sum():
    w, _, _ = _case(0, 3, 4, 0, np.float32)
    idx = np.array([2, 2, 2, 0, 2], np.int64)
    g = np.arange(20, dtype=np.float32).reshape(5, 4)
    dw = np.zeros_like(w)
    emb.embedding_backward(g, idx, emb.NO_PADDING, dw)
    np.testing.assert_array_equal(dw, [g[3], np.zeros(4), g[0] + g[1] + g[2] + g[4]])


def _scatter(kind, g, idx, pad, v, blocks):
    dw = np.zeros((v, g.shape[1]), g.dtype)
    getattr(emb._scatter_add, kind)(g, idx, pad, dw, blocks)
    return dw


@pytest.mark.parametrize("skew", [False, True])
def test_backward_bits_do_not_depend_on_build_blocks_or_threads(skew):
    _, idx, g = _case(4, 300, 16, 5000, np.float32, skew)
    expect = _scatter("serial", g, idx, 7, 300, emb.BLOCKS)
    for blocks in (1, 3, emb.BLOCKS, 1000):
        np.testing.assert_array_equal(_scatter("parallel", g, idx, 7, 300, blocks), expect)
    saved = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            np.testing.assert_array_equal(_scatter("parallel", g, idx, 7, 300, emb.BLOCKS), expect)
    finally:
        numba.set_num_threads(saved)


def test_empty_input():
    w = np.ones((4, 3), np.float32)
    idx = np.empty(0, np.int64)
    assert emb.embedding_forward(w, idx).shape == (0, 3)
    dw = np.ones_like(w)
    emb.embedding_backward(np.empty((0, 3), np.float32), idx, emb.NO_PADDING, dw)
    np.testing.assert_array_equal(dw, 1)


def test_registered_in_both_backends():
    for name in ("embedding_forward", "embedding_backward"):
        assert getattr(kernels.backend("numba"), name) is getattr(emb, name)
        assert getattr(kernels.backend("numpy"), name) is getattr(emb, name + "_np")
