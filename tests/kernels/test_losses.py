"""mse / bce / bce_logits / nll forward kernels (loss and fused gradient) against their NumPy twins."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import losses as L

DTYPES = [np.float32, np.float64]
REDUCTIONS = [L.MEAN, L.SUM]

shapes = st.one_of(st.tuples(st.integers(1, 50)),
                   st.tuples(st.integers(1, 9), st.integers(1, 13)),
                   st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)))


def pair(kind, shape, dtype, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    if kind == L.BCE:
        p = rng.uniform(0, 1, shape)
        if p.size > 2:                                  # the clamped ends
            p.reshape(-1)[0], p.reshape(-1)[1] = 0.0, 1.0
        t = rng.uniform(0, 1, shape)
    elif kind == L.BCE_LOGITS:
        p = rng.standard_normal(shape) * scale
        t = rng.uniform(0, 1, shape)
    else:
        p = rng.standard_normal(shape) * scale
        t = rng.standard_normal(shape) * scale
    return p.astype(dtype), t.astype(dtype)


def independent(kind, p, t):
    """Per-element loss, float64, written without the twin's code."""
    p, t = p.astype(np.float64), t.astype(np.float64)
    if kind == L.MSE:
        return (p - t) ** 2
    if kind == L.BCE:
        with np.errstate(divide="ignore"):
            return -(t * np.clip(np.log(p), -100, None) + (1 - t) * np.clip(np.log(1 - p), -100, None))
    return np.logaddexp(0, p) - p * t


FORWARD = {L.MSE: "mse_forward", L.BCE: "bce_forward", L.BCE_LOGITS: "bce_logits_forward"}


def loss_rtol(kind, dtype):
    """mse and bce compute each element in float64; bce_logits in the input's precision, each term
    within a few ulp and all terms positive, so the float64 sum is too."""
    return 1e-6 if kind == L.BCE_LOGITS and dtype == np.float32 else 1e-10


@pytest.mark.parametrize("kind", [L.MSE, L.BCE, L.BCE_LOGITS])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       need_grad=st.booleans(), scale=st.sampled_from([1e-2, 1.0, 1e4]))
def test_pointwise_losses_match_twin(build, numba_ops, numpy_ops, close, kind, reduction, shape, dtype,
                                     seed, need_grad, scale):
    p, t = pair(kind, shape, dtype, seed, scale)
    name = FORWARD[kind]
    loss, g = getattr(numba_ops, name)(p, t, reduction, need_grad)
    with np.errstate(divide="ignore"):
        loss_ref, g_ref = getattr(numpy_ops, name)(p, t, reduction, need_grad)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, loss_ref, rtol=loss_rtol(kind, dtype))
    denom = p.size if reduction == L.MEAN else 1
    np.testing.assert_allclose(loss, independent(kind, p, t).sum() / denom,
                               rtol=max(loss_rtol(kind, dtype), 1e-9))
    if not need_grad:
        assert g is None and g_ref is None
        return
    assert g.shape == p.shape and g.dtype == np.dtype(dtype) and np.all(np.isfinite(g))
    close(g, g_ref, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(n=st.integers(1, 30), c=st.integers(1, 12), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16), need_grad=st.booleans())
def test_nll_matches_twin(numba_ops, numpy_ops, close, reduction, n, c, dtype, seed, need_grad):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c))
    logp = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(dtype)
    labels = rng.integers(0, c, n).astype(np.int64)
    loss, g = numba_ops.nll_forward(logp, labels, reduction, need_grad)
    loss_ref, g_ref = numpy_ops.nll_forward(logp, labels, reduction, need_grad)
    denom = n if reduction == L.MEAN else 1
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    np.testing.assert_allclose(loss, -logp.astype(np.float64)[np.arange(n), labels].sum() / denom,
                               rtol=1e-12)
    if need_grad:
        assert g.dtype == np.dtype(dtype)
        close(g, g_ref, dtype)
        expect = np.zeros((n, c))
        expect[np.arange(n), labels] = -1.0 / denom
        close(g, expect, dtype)
    else:
        assert g is None and g_ref is None


@pytest.mark.parametrize("which", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [L.MSE, L.BCE, L.BCE_LOGITS])
def test_pointwise_helper_each_build_over_several_chunks(which, dtype, kind, numpy_ops, close):
    """``_pointwise`` through ``.serial`` and ``.parallel``, over more than one CHUNK (the partial
    sums of several chunks and a short last chunk)."""
    n = 2 * L.CHUNK + 123
    p, t = pair(kind, (n,), dtype, 11)
    partial = np.zeros((n + L.CHUNK - 1) // L.CHUNK)
    g = np.empty_like(p)
    none = np.empty(0, dtype)
    getattr(L._pointwise, which)(p, t, kind, 0.0, 1.0 / n, True, g, partial, none, none, none)
    with np.errstate(divide="ignore"):
        loss_ref, g_ref = getattr(numpy_ops, FORWARD[kind])(p, t, L.MEAN, True)
    np.testing.assert_allclose(partial.sum() / n, loss_ref, rtol=loss_rtol(kind, dtype))
    close(g, g_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_clamps_logs_and_bce_logits_is_stable(build, numba_ops, dtype):
    p = np.array([0.0, 1.0, 0.0, 1.0], dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0], dtype)
    loss, g = numba_ops.bce_forward(p, t, L.SUM, True)
    assert loss == pytest.approx(200.0)                  # log clamped at -100, as PyTorch
    assert np.all(np.isfinite(g))
    x = np.array([-1e4, 1e4, -1e4, 1e4], dtype)
    loss, g = numba_ops.bce_logits_forward(x, t, L.SUM, True)
    assert loss == pytest.approx(2e4)
    np.testing.assert_allclose(g, [-1, 1, 0, 0], atol=1e-7)
