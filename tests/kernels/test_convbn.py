"""The fused Conv2d + BatchNorm2d + activation + MaxPool2d(2) training kernels against their twin
(the composition of the unfused layers' twins), serial and parallel builds, float32 and float64."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import convbn as cb
from kernels.activations import IDENTITY, LEAKY_RELU, RELU
from kernels.conv import conv2d_forward_np
from tests.conftest import forced_build
from tests.kernels.test_batchnorm import _combine

BUILDS = ("serial", "parallel")
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-9, atol=1e-9)}


def _case(seed, n, c, o, h, w, kh, kw, dtype):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, h, w)) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(dtype)
    wt = (rng.standard_normal((o, c, kh, kw)) / np.sqrt(c * kh * kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    gamma = rng.uniform(0.5, 2, o).astype(dtype) * rng.choice([-1, 1], o).astype(dtype)
    beta = rng.standard_normal(o).astype(dtype)
    return x, wt, b, gamma, beta


def _clear_winners(x, wt, b, gamma, beta, padding, dilation, act, slope, mean, invstd):
    """Where the twin's four activations of a window are not within rounding of each other's
    maximum: only there must both pick the same winner."""
    z = conv2d_forward_np(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64),
                          (1, 1), padding, dilation)
    shape = (1, -1, 1, 1)
    v = (z - mean.reshape(shape)) * (invstd * gamma).reshape(shape) + beta.reshape(shape)
    if act != IDENTITY:
        v = np.where(v > 0, v, v * (0.0 if act == RELU else slope))
    ph, pw = v.shape[2] // 2, v.shape[3] // 2
    win = v[:, :, :2 * ph, :2 * pw].reshape(v.shape[0], v.shape[1], ph, 2, pw, 2)
    win = np.sort(win.transpose(0, 1, 2, 4, 3, 5).reshape(v.shape[0], v.shape[1], ph, pw, 4), -1)
    return win[..., 3] - win[..., 2] > 1e-4 * (1 + np.abs(win[..., 3]))


geometry = dict(n=st.integers(2, 5), c=st.integers(1, 3), o=st.integers(1, 9),
                h=st.integers(2, 11), w=st.integers(2, 11), kh=st.integers(1, 3),
                kw=st.integers(1, 3), pad=st.integers(0, 2), dil=st.integers(1, 2))


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]),
       act=st.sampled_from([IDENTITY, RELU, LEAKY_RELU]), bias=st.booleans(),
       kind=st.sampled_from(BUILDS), seed=st.integers(0, 2**16), **geometry)
def test_matches_twin(n, c, o, h, w, kh, kw, pad, dil, dtype, act, bias, kind, seed):
    oh, ow = h + 2 * pad - dil * (kh - 1), w + 2 * pad - dil * (kw - 1)
    if min(oh, ow) < 2:
        return                                  # no 2x2 window: the layers reject this shape
    x, wt, b, gamma, beta = _case(seed, n, c, o, h, w, kh, kw, dtype)
    b = b if bias else None
    geo = ((pad, pad), (dil, dil))
    rm, rv = np.zeros(o, dtype), np.ones(o, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    with forced_build(kind):
        pooled, idx, mean, invstd, saved = cb.conv_bn_maxpool_train_forward(
            x, wt, b, *geo, gamma, beta, rm, rv, 0.1, 1e-5, act, 0.1)
    pooled2, idx2, mean2, invstd2, saved2 = cb.conv_bn_maxpool_train_forward_np(
        x, wt, b, *geo, gamma, beta, rm2, rv2, 0.1, 1e-5, act, 0.1)
    assert pooled.shape == (n, o, oh // 2, ow // 2) and pooled.dtype == dtype
    assert idx.dtype == np.uint8
    scale = 1 + np.abs(pooled2).max()
    np.testing.assert_allclose(pooled, pooled2, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)
    np.testing.assert_allclose(mean, mean2, **TOL[dtype])
    np.testing.assert_allclose(invstd, invstd2, **TOL[dtype])
    np.testing.assert_allclose(rm, rm2, **TOL[dtype])
    np.testing.assert_allclose(rv, rv2, **TOL[dtype])
    clear = _clear_winners(x, wt, b if bias else np.zeros(o, dtype), gamma, beta, *geo, act, 0.1,
                           mean2, invstd2)
    np.testing.assert_array_equal(idx[clear], idx2[clear])

    # Backward from the same winners (so a near-tie cannot send the gradient elsewhere).
    grad = np.random.default_rng(seed + 1).standard_normal(pooled.shape).astype(dtype)
    out = []
    for impl, sv in ((cb.conv_bn_maxpool_backward, saved), (cb.conv_bn_maxpool_backward_np, saved2)):
        dw, dg, dbt = np.ones_like(wt), np.ones(o, dtype), np.ones(o, dtype)
        db = np.ones(o, dtype) if bias else None
        with forced_build(kind):
            assert impl(grad, idx, pooled, sv, wt, gamma, mean, invstd, act, 0.1, dw, db, dg,
                        dbt) is None
        out.append((dw, db, dg, dbt))
    (dw, db, dg, dbt), (dw2, db2, dg2, dbt2) = out
    gscale = 1 + np.abs(dw2 - 1).max()
    np.testing.assert_allclose(dw, dw2, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * gscale)
    np.testing.assert_allclose(dg, dg2, **TOL[dtype])
    np.testing.assert_allclose(dbt, dbt2, **TOL[dtype])
    if bias:   # exactly zero before BatchNorm: the kernel adds nothing, the twin adds rounding
        np.testing.assert_array_equal(db, np.ones(o, dtype))
        np.testing.assert_allclose(db2, 1, atol=TOL[dtype]["atol"] * gscale)


def test_builds_agree_bit_for_bit():
    x, wt, b, gamma, beta = _case(3, 6, 2, 5, 9, 8, 3, 3, np.float32)
    grad = np.random.default_rng(4).standard_normal((6, 5, 4, 4)).astype(np.float32)
    out = {}
    for kind in BUILDS:
        rm, rv = np.zeros(5, np.float32), np.ones(5, np.float32)
        dw, dg, dbt = np.zeros_like(wt), np.zeros(5, np.float32), np.zeros(5, np.float32)
        with forced_build(kind):
            pooled, idx, mean, invstd, saved = cb.conv_bn_maxpool_train_forward(
                x, wt, b, (1, 1), (1, 1), gamma, beta, rm, rv, 0.1, 1e-5, RELU, 0.0)
            cb.conv_bn_maxpool_backward(grad, idx, pooled, saved, wt, gamma, mean, invstd, RELU,
                                        0.0, dw, None, dg, dbt)
        out[kind] = (pooled, idx, mean, invstd, rm, rv, dw, dg, dbt)
    for a, e in zip(out["serial"], out["parallel"]):
        np.testing.assert_array_equal(a, e)


def test_statistics_of_data_far_from_zero():
    # The input is shifted before the moments are summed: data around 1e3 with a spread of 1e-1
    # keeps float32 accuracy in the statistics (unshifted float64 moments would still cancel
    # to 1e-8 relative, the shifted ones do not).
    x, wt, b, gamma, beta = _case(5, 4, 1, 3, 8, 8, 3, 3, np.float64)
    x = 1e3 + 0.1 * x
    e = np.empty(0)
    _, _, mean, invstd, _ = cb.conv_bn_maxpool_train_forward(x, wt, b, (0, 0), (1, 1), gamma, beta,
                                                             e, e, 0.1, 1e-5, RELU, 0.0)
    _, _, mean2, invstd2, _ = cb.conv_bn_maxpool_train_forward_np(x, wt, b, (0, 0), (1, 1), gamma,
                                                                  beta, e, e, 0.1, 1e-5, RELU, 0.0)
    np.testing.assert_allclose(mean, mean2, rtol=1e-12)
    np.testing.assert_allclose(invstd, invstd2, rtol=1e-7)


def test_nan_input_gives_nan_channels_as_the_twin():
    x, wt, b, gamma, beta = _case(6, 3, 1, 2, 6, 6, 3, 3, np.float32)
    x[1, 0, 2, 3] = np.nan
    e = np.empty(0, np.float32)
    for impl in (cb.conv_bn_maxpool_train_forward, cb.conv_bn_maxpool_train_forward_np):
        pooled, idx, mean, _, _ = impl(x, wt, b, (1, 1), (1, 1), gamma, beta, e, e, 0.1, 1e-5,
                                       RELU, 0.0)
        assert np.isnan(mean).all() and np.isnan(pooled).all() and (idx == 3).all()


@pytest.mark.parametrize("name", ["conv_bn_maxpool_train_forward", "conv_bn_maxpool_backward"])
def test_registered_in_both_backends(name):
    assert getattr(kernels.backend("numba"), name) is getattr(cb, name)
    assert getattr(kernels.backend("numpy"), name) is getattr(cb, name + "_np")


@settings(max_examples=25, deadline=None)
@given(shards=st.integers(1, 3), dtype=st.sampled_from([np.float32, np.float64]),
       act=st.sampled_from([IDENTITY, RELU, LEAKY_RELU]), bias=st.booleans(),
       kind=st.sampled_from(BUILDS), seed=st.integers(0, 2**16), **geometry)
def test_synchronised_passes_give_the_whole_batch_block(n, c, o, h, w, kh, kw, pad, dil, dtype,
                                                        act, bias, kind, seed, shards):
    # The block's split passes (SyncBatchNorm) run shard by shard, with the shards' statistics
    # and sums combined, give the whole batch's fused forward and weight gradient (both backends).
    oh, ow = h + 2 * pad - dil * (kh - 1), w + 2 * pad - dil * (kw - 1)
    if min(oh, ow) < 2:
        return
    x, wt, b, gamma, beta = _case(seed, n * shards, c, o, h, w, kh, kw, dtype)
    b = b if bias else None
    geo = ((pad, pad), (dil, dil))
    rm, rv = np.zeros(o, dtype), np.ones(o, dtype)
    pooled_ref, idx_ref, mean_ref, invstd_ref, _ = cb.conv_bn_maxpool_train_forward_np(
        x, wt, b, *geo, gamma, beta, rm, rv, 0.1, 1e-5, act, 0.1)
    grad = np.random.default_rng(seed + 1).standard_normal(pooled_ref.shape).astype(dtype)
    dw_ref, dg_ref, db_ref = np.zeros_like(wt), np.zeros(o, dtype), np.zeros(o, dtype)
    cb.conv_bn_maxpool_backward_np(grad, idx_ref, pooled_ref, _, wt, gamma, mean_ref, invstd_ref,
                                   act, 0.1, dw_ref, None, dg_ref, db_ref)
    clear = _clear_winners(x, wt, b if bias else np.zeros(o, dtype), gamma, beta, *geo, act, 0.1,
                           mean_ref, invstd_ref)
    parts = [slice(r * n, (r + 1) * n) for r in range(shards)]
    scale = 1 + np.abs(pooled_ref).max()
    gscale = 1 + np.abs(dw_ref).max()
    for suffix in ("", "_np"):
        stats = getattr(cb, "conv_bn_maxpool_stats" + suffix)
        apply = getattr(cb, "conv_bn_maxpool_apply_forward" + suffix)
        sums = getattr(cb, "conv_bn_maxpool_grad_sums" + suffix)
        finish = getattr(cb, "conv_bn_maxpool_sync_backward" + suffix)
        with forced_build(kind):
            local = [stats(x[p], wt, b, *geo) for p in parts]
            m, mean, m2 = _combine([(cnt, mu, q) for cnt, mu, q, _ in local])
            np.testing.assert_allclose(mean, mean_ref, **TOL[dtype])
            invstd = 1.0 / np.sqrt(m2 / m + 1e-5)
            np.testing.assert_allclose(invstd, invstd_ref, **TOL[dtype])
            out = [apply(prep, wt, b, gamma, beta, mean, invstd, act, 0.1)
                   for _, _, _, prep in local]
            pooled = np.concatenate([q[0] for q in out])
            np.testing.assert_allclose(pooled, pooled_ref, rtol=TOL[dtype]["rtol"],
                                       atol=TOL[dtype]["atol"] * scale)
            np.testing.assert_array_equal(np.concatenate([q[1] for q in out])[clear],
                                          idx_ref[clear])
            part = [sums(grad[p], idx_ref[p], pooled_ref[p], q[2], wt, b, gamma, mean, invstd,
                         act, 0.1) for p, q in zip(parts, out)]
            sg, sgx = sum(t[0] for t in part), sum(t[1] for t in part)
            np.testing.assert_allclose(sg.astype(dtype), db_ref, **TOL[dtype])
            np.testing.assert_allclose(sgx.astype(dtype), dg_ref, **TOL[dtype])
            dw = np.zeros_like(wt)
            for p, q, t in zip(parts, out, part):
                finish(grad[p], idx_ref[p], pooled_ref[p], q[2], t[2], wt, gamma, mean, invstd,
                       act, 0.1, sg / m, sgx / m, dw)
        np.testing.assert_allclose(dw, dw_ref, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["atol"] * gscale)
