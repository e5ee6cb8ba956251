"""Batch-norm kernels against their NumPy twins, serial and parallel builds, float32 and float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import batchnorm as bn
from kernels.activations import IDENTITY, LEAKY_RELU, RELU
from tests.conftest import forced_build

BUILDS = ("serial", "parallel")
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-11)}


def _shape(layout, n, c, s):
    return {2: (n, c), 3: (n, c, s), 4: (n, c, s, s + 1)}[layout]


def _case(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(dtype)
    gamma = rng.standard_normal(c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, rm, rv, grad


cases = dict(layout=st.sampled_from([2, 3, 4]), n=st.integers(2, 9), c=st.integers(1, 70),
             s=st.integers(1, 6), dtype=st.sampled_from([np.float32, np.float64]),
             act=st.sampled_from([IDENTITY, RELU, LEAKY_RELU]),
             kind=st.sampled_from(BUILDS), seed=st.integers(0, 2**16))


@settings(max_examples=30, deadline=None)
@given(momentum=st.sampled_from([0.1, 0.5, 1.0]), **cases)
def test_train_forward_matches_twin(layout, n, c, s, dtype, act, kind, seed, momentum):
    x, gamma, beta, rm, rv, _ = _case(seed, _shape(layout, n, c, s), dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    with forced_build(kind):
        y, mean, invstd = bn.batchnorm_train_forward(x, gamma, beta, rm, rv, momentum, 1e-5, act,
                                                     0.1)
    y2, mean2, invstd2 = bn.batchnorm_train_forward_np(x, gamma, beta, rm2, rv2, momentum, 1e-5,
                                                       act, 0.1)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, y2, **TOL[dtype])
    np.testing.assert_allclose(mean, mean2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(invstd, invstd2, rtol=1e-7)
    np.testing.assert_allclose(rm, rm2, **TOL[dtype])
    np.testing.assert_allclose(rv, rv2, **TOL[dtype])


@settings(max_examples=30, deadline=None)
@given(**cases)
def test_eval_forward_matches_twin(layout, n, c, s, dtype, act, kind, seed):
    n = n if seed % 3 else 1  # batch 1 is fine in eval
    x, gamma, beta, rm, rv, _ = _case(seed, _shape(layout, n, c, s), dtype)
    with forced_build(kind):
        y, mean, invstd = bn.batchnorm_eval_forward(x, gamma, beta, rm, rv, 1e-5, act, 0.2)
    y2, mean2, invstd2 = bn.batchnorm_eval_forward_np(x, gamma, beta, rm, rv, 1e-5, act, 0.2)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, y2, **TOL[dtype])
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(invstd, invstd2)


@settings(max_examples=30, deadline=None)
@given(batch_stats=st.booleans(), need_dx=st.booleans(), **cases)
def test_backward_matches_twin(layout, n, c, s, dtype, act, kind, seed, batch_stats, need_dx):
    x, gamma, beta, rm, rv, grad = _case(seed, _shape(layout, n, c, s), dtype)
    y, mean, invstd = bn.batchnorm_train_forward_np(x, gamma, beta, rm, rv, 0.1, 1e-5, act, 0.1)
    start = np.random.default_rng(seed).standard_normal((2, c)).astype(dtype)
    dg, db = start[0].copy(), start[1].copy()
    dg2, db2 = start[0].copy(), start[1].copy()
    with forced_build(kind):
        dx = bn.batchnorm_backward(grad, x, y, gamma, mean, invstd, act, 0.1, batch_stats, dg, db,
                                   need_dx)
    dx2 = bn.batchnorm_backward_np(grad, x, y, gamma, mean, invstd, act, 0.1, batch_stats, dg2,
                                   db2, need_dx)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TOL[dtype]
    np.testing.assert_allclose(dg, dg2, **tol)  # accumulated into, not overwritten
    np.testing.assert_allclose(db, db2, **tol)
    if need_dx:
        assert dx.dtype == dtype
        np.testing.assert_allclose(dx, dx2, **tol)
    else:
        assert dx is None and dx2 is None


@pytest.mark.parametrize("shape", [(64, 40), (16, 3, 50), (8, 3, 7, 9)])
def test_serial_and_parallel_builds_agree_bit_for_bit(shape):
    x, gamma, beta, rm, rv, grad = _case(1, shape, np.float32)
    out = {}
    for kind in BUILDS:
        r1, r2 = rm.copy(), rv.copy()
        dg, db = np.zeros_like(gamma), np.zeros_like(gamma)
        with forced_build(kind):
            y, mean, invstd = bn.batchnorm_train_forward(x, gamma, beta, r1, r2, 0.1, 1e-5, RELU, 0)
            dx = bn.batchnorm_backward(grad, x, y, gamma, mean, invstd, RELU, 0, True, dg, db, True)
            ye = bn.batchnorm_eval_forward(x, gamma, beta, r1, r2, 1e-5, RELU, 0)[0]
        out[kind] = (y, mean, invstd, r1, r2, dx, dg, db, ye)
    for a, b in zip(out["serial"], out["parallel"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(256, 5), (32, 5, 40), (16, 5, 6, 7)])
@pytest.mark.parametrize("impl", ["kernel", "twin"])
def test_large_mean_small_spread_normalises(shape, impl):
    """Mean 1e4, spread 1e-2 in float32 (the ulp of 1e4 is 1e-3): the output must match a float64
    normalisation of the same float32 values."""
    rng = np.random.default_rng(3)
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
    c = shape[1]
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    f = bn.batchnorm_train_forward if impl == "kernel" else bn.batchnorm_train_forward_np
    y, mean, invstd = f(x, gamma, beta, rm, rv, 1.0, 1e-12, IDENTITY, 0.0)
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes, keepdims=True)
    ref = (x64 - mu) / np.sqrt(x64.var(axis=axes, keepdims=True) + 1e-12)
    np.testing.assert_allclose(y, ref, atol=1e-4)
    np.testing.assert_allclose(y.mean(axis=axes, dtype=np.float64), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=axes, dtype=np.float64), 1, atol=1e-4)
    np.testing.assert_allclose(rm, mu.reshape(-1), rtol=1e-7)


def test_running_statistics_use_unbiased_variance():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [8.0, 13.0]], np.float32)
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    bn.batchnorm_train_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32), rm, rv, 0.25,
                               1e-5, IDENTITY, 0.0)
    np.testing.assert_allclose(rm, 0.25 * x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(rv, 0.75 + 0.25 * x.var(axis=0, ddof=1), rtol=1e-6)


def test_untracked_running_statistics_are_skipped():
    x, gamma, beta, _, _, _ = _case(0, (5, 3), np.float32)
    empty = np.empty(0, np.float32)
    y, _, _ = bn.batchnorm_train_forward(x, gamma, beta, empty, empty, 0.1, 1e-5, IDENTITY, 0.0)
    y2, _, _ = bn.batchnorm_train_forward_np(x, gamma, beta, empty, empty, 0.1, 1e-5, IDENTITY, 0)
    np.testing.assert_allclose(y, y2, **TOL[np.float32])


def test_registered_in_both_backends():
    import kernels
    for name in ("batchnorm_train_forward", "batchnorm_eval_forward", "batchnorm_backward"):
        assert getattr(kernels.backend("numba"), name) is getattr(bn, name)
        assert getattr(kernels.backend("numpy"), name) is getattr(bn, name + "_np")


# ------------------------------------------------------------------ the synchronised passes

def _combine(stats):
    """Chan's combination of (count, mean, m2) triples, written out independently."""
    n, mean, m2 = 0, 0.0, 0.0
    for cnt, mu, q in stats:
        delta = mu - mean
        total = n + cnt
        mean = mean + delta * cnt / total
        m2 = m2 + q + delta * delta * n * cnt / total
        n = total
    return n, mean, m2


@settings(max_examples=30, deadline=None)
@given(shards=st.integers(1, 3), **cases)
def test_split_passes_give_the_whole_batch_pass(layout, n, c, s, dtype, act, kind, seed, shards):
    # The synchronised passes run shard by shard, with the shards' statistics and sums combined,
    # give the whole batch's forward and input gradient (batchnorm_train_forward and
    # batchnorm_backward with batch statistics), on both backends.
    x, gamma, beta, rm, rv, grad = _case(seed, _shape(layout, n * shards, c, s), dtype)
    y_ref, mean_ref, invstd_ref = bn.batchnorm_train_forward_np(
        x, gamma, beta, rm.copy(), rv.copy(), 0.1, 1e-5, act, 0.1)
    dg_ref, db_ref = np.zeros(c, dtype), np.zeros(c, dtype)
    dx_ref = bn.batchnorm_backward_np(grad, x, y_ref, gamma, mean_ref, invstd_ref, act, 0.1, True,
                                      dg_ref, db_ref, True)
    parts = [slice(r * n, (r + 1) * n) for r in range(shards)]
    m = x.size // c
    for ops in ("numba", "numpy"):
        suffix = "" if ops == "numba" else "_np"
        stats = getattr(bn, "batchnorm_stats" + suffix)
        apply = getattr(bn, "batchnorm_apply_forward" + suffix)
        sums = getattr(bn, "batchnorm_grad_sums" + suffix)
        input_grad = getattr(bn, "batchnorm_input_grad" + suffix)
        with forced_build(kind):
            local = [(x[p].size // c,) + stats(x[p]) for p in parts]
            total, mean, m2 = _combine(local)
            assert total == m
            invstd = 1.0 / np.sqrt(m2 / m + 1e-5)
            np.testing.assert_allclose(mean, mean_ref, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(invstd, invstd_ref, rtol=1e-7)
            y = [apply(x[p], gamma, beta, mean, invstd, act, 0.1) for p in parts]
            np.testing.assert_allclose(np.concatenate(y), y_ref, **TOL[dtype])
            g = [sums(grad[p], x[p], yp, mean, invstd, act, 0.1) for p, yp in zip(parts, y)]
            sg = sum(a for a, _ in g)
            sgx = sum(b for _, b in g)
            np.testing.assert_allclose(sg.astype(dtype), db_ref, **TOL[dtype])
            np.testing.assert_allclose(sgx.astype(dtype), dg_ref, **TOL[dtype])
            dx = [input_grad(grad[p], x[p], yp, gamma, mean, invstd, act, 0.1, sg / m, sgx / m)
                  for p, yp in zip(parts, y)]
        np.testing.assert_allclose(np.concatenate(dx), dx_ref, **TOL[dtype])
