"""The fused BatchNorm2d + activation + MaxPool(2) kernels against their NumPy twins and against the
unfused kernels, serial and parallel builds, float32 and float64."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import batchnorm as bn
from kernels import batchnorm_pool as bnp
from kernels.activations import IDENTITY, LEAKY_RELU, RELU
from tests.conftest import forced_build
from tests.kernels.test_batchnorm import BUILDS, TOL, _case, _combine


pool_cases = dict(n=st.integers(2, 6), c=st.integers(1, 20), h=st.integers(2, 9),
                  w=st.integers(2, 9), dtype=st.sampled_from([np.float32, np.float64]),
                  act=st.sampled_from([IDENTITY, RELU, LEAKY_RELU]),
                  kind=st.sampled_from(BUILDS), seed=st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(need_dx=st.booleans(), **pool_cases)
def test_maxpool_fused_matches_twin(n, c, h, w, dtype, act, kind, seed, need_dx):
    # odd h, w included: the pool drops the last row/column, the statistics do not
    x, gamma, beta, rm, rv, _ = _case(seed, (n, c, h, w), dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    with forced_build(kind):
        y, idx, mean, invstd = bnp.batchnorm_maxpool_train_forward(x, gamma, beta, rm, rv, 0.1,
                                                                  1e-5, act, 0.1)
    y2, idx2, mean2, invstd2 = bnp.batchnorm_maxpool_train_forward_np(x, gamma, beta, rm2, rv2, 0.1,
                                                                     1e-5, act, 0.1)
    assert y.shape == (n, c, h // 2, w // 2) and y.dtype == dtype and idx.dtype == np.uint8
    np.testing.assert_allclose(y, y2, **TOL[dtype])
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_allclose(mean, mean2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rm, rm2, **TOL[dtype])
    np.testing.assert_allclose(rv, rv2, **TOL[dtype])
    grad = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
    dg, db = np.ones(c, dtype), np.ones(c, dtype)
    dg2, db2 = dg.copy(), db.copy()
    with forced_build(kind):
        dx = bnp.batchnorm_maxpool_backward(grad, idx, y, x, gamma, mean, invstd, act, 0.1, dg, db,
                                           need_dx)
    dx2 = bnp.batchnorm_maxpool_backward_np(grad, idx, y, x, gamma, mean, invstd, act, 0.1, dg2,
                                           db2, need_dx)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TOL[dtype]
    np.testing.assert_allclose(dg, dg2, **tol)
    np.testing.assert_allclose(db, db2, **tol)
    if need_dx:
        np.testing.assert_allclose(dx, dx2, **tol)
    else:
        assert dx is None and dx2 is None


def test_maxpool_fused_equals_batchnorm_then_maxpool():
    # The twin is itself a composition; check both against the two unfused kernels. A NaN input
    # makes its channel's statistics NaN: the channel comes out NaN, each window pointing at its
    # last element (a NaN wins, the last one if several, as in max_pool2d).
    from kernels import pool
    x, gamma, beta, rm, rv, _ = _case(3, (4, 3, 6, 8), np.float32)
    x[1, 2, 2, 3] = np.nan
    for impl in (bnp.batchnorm_maxpool_train_forward, bnp.batchnorm_maxpool_train_forward_np):
        y, idx, mean, _ = impl(x, gamma, beta, rm.copy(), rv.copy(), 0.1, 1e-5, RELU, 0)
        full, _, _ = bn.batchnorm_train_forward(x, gamma, beta, rm.copy(), rv.copy(), 0.1, 1e-5,
                                                RELU, 0)
        ref, flat = pool.maxpool2d_forward(full, (2, 2), (2, 2), (0, 0))
        np.testing.assert_allclose(y, ref, **TOL[np.float32])
        row, col = np.divmod(flat, x.shape[3])
        np.testing.assert_array_equal(idx, 2 * (row % 2) + col % 2)
        assert np.isnan(y[:, 2]).all() and (idx[:, 2] == 3).all() and not np.isnan(y[:, :2]).any()


def test_maxpool_fused_builds_agree_bit_for_bit():
    x, gamma, beta, rm, rv, _ = _case(2, (8, 5, 6, 7), np.float32)
    grad = np.random.default_rng(2).standard_normal((8, 5, 3, 3)).astype(np.float32)
    out = {}
    for kind in BUILDS:
        r1, r2 = rm.copy(), rv.copy()
        dg, db = np.zeros_like(gamma), np.zeros_like(gamma)
        with forced_build(kind):
            y, idx, mean, invstd = bnp.batchnorm_maxpool_train_forward(x, gamma, beta, r1, r2, 0.1,
                                                                      1e-5, RELU, 0)
            dx = bnp.batchnorm_maxpool_backward(grad, idx, y, x, gamma, mean, invstd, RELU, 0, dg,
                                               db, True)
        out[kind] = (y, idx, mean, invstd, r1, r2, dx, dg, db)
    for a, b in zip(out["serial"], out["parallel"]):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(shards=st.integers(1, 3), **pool_cases)
def test_synchronised_passes_give_the_whole_batch_pass(n, c, h, w, dtype, act, kind, seed, shards):
    # The split passes of a SyncBatchNorm run shard by shard, with the shards' statistics and
    # sums combined, give the whole batch's fused forward and backward (both backends).
    x, gamma, beta, rm, rv, _ = _case(seed, (n * shards, c, h, w), dtype)
    pooled_ref, idx_ref, mean_ref, invstd_ref = bnp.batchnorm_maxpool_train_forward_np(
        x, gamma, beta, rm, rv, 0.1, 1e-5, act, 0.1)
    grad = np.random.default_rng(seed + 1).standard_normal(pooled_ref.shape).astype(dtype)
    dg_ref, db_ref = np.zeros(c, dtype), np.zeros(c, dtype)
    dx_ref = bnp.batchnorm_maxpool_backward_np(grad, idx_ref, pooled_ref, x, gamma, mean_ref,
                                               invstd_ref, act, 0.1, dg_ref, db_ref, True)
    parts = [slice(r * n, (r + 1) * n) for r in range(shards)]
    m = x.size // c
    for suffix in ("", "_np"):
        stats = getattr(bn, "batchnorm_stats" + suffix)
        apply = getattr(bnp, "batchnorm_maxpool_apply_forward" + suffix)
        backward = getattr(bnp, "batchnorm_maxpool_backward" + suffix)
        input_grad = getattr(bnp, "batchnorm_maxpool_input_grad" + suffix)
        with forced_build(kind):
            _, mean, m2 = _combine([(x[p].size // c,) + stats(x[p]) for p in parts])
            invstd = 1.0 / np.sqrt(m2 / m + 1e-5)
            out = [apply(x[p], gamma, beta, mean, invstd, act, 0.1) for p in parts]
            np.testing.assert_allclose(np.concatenate([o[0] for o in out]), pooled_ref,
                                       **TOL[dtype])
            sg, sgx = np.zeros(c), np.zeros(c)
            for p in parts:   # the reference's winners, so a near-tie cannot move the gradient
                backward(grad[p], idx_ref[p], pooled_ref[p], x[p], gamma, mean, invstd, act, 0.1,
                         sgx, sg, False)
            np.testing.assert_allclose(sg.astype(dtype), db_ref, **TOL[dtype])
            np.testing.assert_allclose(sgx.astype(dtype), dg_ref, **TOL[dtype])
            dx = [input_grad(grad[p], idx_ref[p], pooled_ref[p], x[p], gamma, mean, invstd, act,
                             0.1, sg / m, sgx / m) for p in parts]
        np.testing.assert_allclose(np.concatenate(dx), dx_ref, **TOL[dtype])
