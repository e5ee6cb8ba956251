"""Layer-norm kernels against their NumPy twins and a float64 reference, serial and parallel builds,
float32 and float64; the backward's bits do not depend on the build or the thread count."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import layernorm as ln
from tests.conftest import forced_build

BUILDS = ("serial", "parallel")
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-11)}


def _case(seed, n, d, dtype, offset=0.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * rng.uniform(0.5, 3) + offset).astype(dtype)
    w = rng.standard_normal(d).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    g = rng.standard_normal((n, d)).astype(dtype)
    return x, w, b, g


def _reference(x, w, b, g, eps):
    """Forward and gradients in float64, written out from the definitions (no kernel code)."""
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    mu = x64.mean(axis=1, keepdims=True)
    rstd = 1 / np.sqrt(((x64 - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (x64 - mu) * rstd
    gxhat = g64 * w64
    dxhat_mean = gxhat.mean(axis=1, keepdims=True)
    dx = rstd * (gxhat - dxhat_mean - xhat * (gxhat * xhat).mean(axis=1, keepdims=True))
    return xhat * w64 + b, mu[:, 0], rstd[:, 0], dx, (g64 * xhat).sum(0), g64.sum(0)


shapes = dict(n=st.integers(0, 40), d=st.integers(1, 70), dtype=st.sampled_from([np.float32,
                                                                                  np.float64]),
              kind=st.sampled_from(BUILDS), seed=st.integers(0, 2**16),
              offset=st.sampled_from([0.0, 3.0, -50.0]))


@settings(max_examples=25, deadline=None)
@given(**shapes)
def test_forward_matches_twin_and_reference(n, d, dtype, kind, seed, offset):
    x, w, b, g = _case(seed, n, d, dtype, offset)
    with forced_build(kind):
        y, mean, rstd = ln.layernorm_forward(x, w, b, 1e-5)
    y2, mean2, rstd2 = ln.layernorm_forward_np(x, w, b, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    assert mean.dtype == rstd.dtype == np.float64 and mean.shape == rstd.shape == (n,)
    np.testing.assert_allclose(y, y2, **TOL[dtype])
    np.testing.assert_allclose(mean, mean2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rstd, rstd2, rtol=1e-11)
    ref, mu, r, *_ = _reference(x, w, b, g, 1e-5)
    np.testing.assert_allclose(y, ref, **TOL[dtype])
    np.testing.assert_allclose(mean, mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rstd, r, rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(need_dx=st.booleans(), grads=st.sampled_from(["both", "weight", "none"]), **shapes)
def test_backward_matches_twin_and_reference(n, d, dtype, kind, seed, offset, need_dx, grads):
    x, w, b, g = _case(seed, n, d, dtype, offset)
    _, mean, rstd = ln.layernorm_forward_np(x, w, b, 1e-5)
    start = np.random.default_rng(seed + 1).standard_normal((2, d)).astype(dtype)
    dw, db = (start[0].copy(), start[1].copy()) if grads != "none" else (None, None)
    if grads == "weight":
        db = None
    dw2 = None if dw is None else dw.copy()
    db2 = None if db is None else db.copy()
    with forced_build(kind):
        dx = ln.layernorm_backward(g, x, w, mean, rstd, dw, db, need_dx)
    dx2 = ln.layernorm_backward_np(g, x, w, mean, rstd, dw2, db2, need_dx)
    _, _, _, dx_ref, dw_ref, db_ref = _reference(x, w, b, g, 1e-5)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TOL[dtype]
    if dw is not None:      # accumulated into, not overwritten
        np.testing.assert_allclose(dw, dw2, **tol)
        np.testing.assert_allclose(dw, start[0] + dw_ref, **tol)
    if db is not None:
        np.testing.assert_allclose(db, db2, **tol)
        np.testing.assert_allclose(db, start[1] + db_ref, **tol)
    if need_dx:
        assert dx.dtype == dtype and dx.shape == x.shape
        np.testing.assert_allclose(dx, dx2, **tol)
        np.testing.assert_allclose(dx, dx_ref, **tol)
    else:
        assert dx is None and dx2 is None


def _run(kind, x, w, b, g):
    dw, db = np.zeros_like(w), np.zeros_like(w)
    with forced_build(kind):
        y, mean, rstd = ln.layernorm_forward(x, w, b, 1e-5)
        dx = ln.layernorm_backward(g, x, w, mean, rstd, dw, db, True)
    return y, mean, rstd, dx, dw, db


@pytest.mark.parametrize("shape", [(100, 40), (2000, 33)])
def test_serial_and_parallel_builds_agree_bit_for_bit(shape):
    x, w, b, g = _case(1, *shape, np.float32)
    for a, c in zip(_run("serial", x, w, b, g), _run("parallel", x, w, b, g)):
        np.testing.assert_array_equal(a, c)


def test_backward_does_not_depend_on_thread_count():
    x, w, b, g = _case(2, 1000, 24, np.float32)
    _, mean, rstd = ln.layernorm_forward(x, w, b, 1e-5)
    results = []
    saved = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            dw, db = np.zeros_like(w), np.zeros_like(w)
            dx = ln.layernorm_backward(g, x, w, mean, rstd, dw, db, True)
            results.append((dx, dw, db))
    finally:
        numba.set_num_threads(saved)
    for got in results[1:]:
        for a, c in zip(got, results[0]):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("impl", ["kernel", "twin"])
def test_large_mean_small_spread_normalises(impl):
    """Rows of mean 1e4 and spread 1e-2 in float32 (the ulp of 1e4 is 1e-3): the output must match
    a float64 normalisation of the same float32 values."""
    x = (1e4 + 1e-2 * np.random.default_rng(3).standard_normal((64, 50))).astype(np.float32)
    w, b = np.ones(50, np.float32), np.zeros(50, np.float32)
    f = ln.layernorm_forward if impl == "kernel" else ln.layernorm_forward_np
    y, _, _ = f(x, w, b, 1e-12)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_constant_rows_and_zero_eps():
    x = np.full((3, 5), 2.5, np.float32)
    w, b = np.ones(5, np.float32), np.full(5, 0.5, np.float32)
    y, mean, rstd = ln.layernorm_forward(x, w, b, 1e-5)
    np.testing.assert_array_equal(y, 0.5)          # xhat is exactly 0: the bias
    np.testing.assert_array_equal(mean, 2.5)
    y0, _, rstd0 = ln.layernorm_forward(x, w, b, 0.0)
    assert np.isinf(rstd0).all() and np.isnan(y0).all()    # 0 * inf, as PyTorch gives


def test_registered_in_both_backends():
    for name in ("layernorm_forward", "layernorm_backward"):
        assert getattr(kernels.backend("numba"), name) is getattr(ln, name)
        assert getattr(kernels.backend("numpy"), name) is getattr(ln, name + "_np")
