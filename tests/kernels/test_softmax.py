"""Softmax, log-softmax and the fused cross-entropy kernels against their NumPy twins."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import softmax as S

DTYPES = [np.float32, np.float64]
REDUCTIONS = [S.MEAN, S.SUM]

dims = dict(n=st.integers(1, 17), c=st.integers(1, 23), dtype=st.sampled_from(DTYPES),
            scale=st.sampled_from([1e-3, 1.0, 50.0, 1e4]), seed=st.integers(0, 2**16))


def logits(n, c, dtype, scale, seed):
    return (np.random.default_rng(seed).standard_normal((n, c)) * scale).astype(dtype)


def lse64(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


@given(**dims)
def test_softmax_forward_matches_twin(build, numba_ops, numpy_ops, close, n, c, dtype, scale, seed):
    x = logits(n, c, dtype, scale, seed)
    y = numba_ops.softmax_forward(x)
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    assert np.all(np.isfinite(y))
    close(y, numpy_ops.softmax_forward(x), dtype)
    close(y, np.exp(x.astype(np.float64) - lse64(x)[:, None]), dtype, rtol=1e-5, atol=1e-6)
    close(y.sum(axis=1, dtype=np.float64), np.ones(n), dtype, rtol=1e-5, atol=1e-6)


@given(**dims)
def test_log_softmax_forward_matches_twin(build, numba_ops, numpy_ops, close, n, c, dtype, scale,
                                          seed):
    x = logits(n, c, dtype, scale, seed)
    y = numba_ops.log_softmax_forward(x)
    assert y.dtype == np.dtype(dtype) and np.all(np.isfinite(y))
    atol = 1e-6 * max(scale, 1) if dtype == np.float32 else 1e-12 * max(scale, 1)
    close(y, numpy_ops.log_softmax_forward(x), dtype, atol=atol)
    close(y, x.astype(np.float64) - lse64(x)[:, None], dtype, atol=atol * 4)


@given(**dims)
def test_softmax_backward_matches_twin(build, numba_ops, numpy_ops, close, n, c, dtype, scale, seed):
    y = numpy_ops.softmax_forward(logits(n, c, dtype, scale, seed))
    grad = logits(n, c, dtype, 1.0, seed + 1)
    dx = numba_ops.softmax_backward(grad, y)
    assert dx.dtype == np.dtype(dtype)
    close(dx, numpy_ops.softmax_backward(grad, y), dtype, atol=1e-6 if dtype == np.float32 else 1e-12)


@given(**dims)
def test_log_softmax_backward_matches_twin(build, numba_ops, numpy_ops, close, n, c, dtype, scale,
                                           seed):
    y = numpy_ops.log_softmax_forward(logits(n, c, dtype, scale, seed))
    grad = logits(n, c, dtype, 1.0, seed + 1)
    dx = numba_ops.log_softmax_backward(grad, y)
    assert dx.dtype == np.dtype(dtype) and np.all(np.isfinite(dx))
    close(dx, numpy_ops.log_softmax_backward(grad, y), dtype,
          atol=1e-5 * c if dtype == np.float32 else 1e-12 * c)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(need_grad=st.booleans(), **dims)
def test_cross_entropy_labels_matches_twin(build, numba_ops, numpy_ops, close, reduction, need_grad,
                                           n, c, dtype, scale, seed):
    x = logits(n, c, dtype, scale, seed)
    labels = np.random.default_rng(seed + 2).integers(0, c, n).astype(np.int64)
    loss, g = numba_ops.cross_entropy_forward(x, labels, reduction, need_grad)
    loss_ref, g_ref = numpy_ops.cross_entropy_forward(x, labels, reduction, need_grad)
    assert np.isfinite(loss)
    denom = n if reduction == S.MEAN else 1
    expect = (lse64(x) - x.astype(np.float64)[np.arange(n), labels]).sum() / denom
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(loss, loss_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(loss, expect, rtol=rtol, atol=rtol * max(scale, 1))
    if not need_grad:
        assert g is None and g_ref is None
        return
    assert g.dtype == np.dtype(dtype) and g.shape == x.shape and np.all(np.isfinite(g))
    close(g, g_ref, dtype, atol=1e-6 / denom if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(g.sum(axis=1, dtype=np.float64), 0, atol=1e-5 if dtype == np.float32
                               else 1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(need_grad=st.booleans(), **dims)
def test_cross_entropy_probs_matches_twin(build, numba_ops, numpy_ops, close, reduction, need_grad,
                                          n, c, dtype, scale, seed):
    x = logits(n, c, dtype, scale, seed)
    t = np.random.default_rng(seed + 3).random((n, c))
    t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    loss, g = numba_ops.cross_entropy_probs_forward(x, t, reduction, need_grad)
    loss_ref, g_ref = numpy_ops.cross_entropy_probs_forward(x, t, reduction, need_grad)
    assert np.isfinite(loss)
    denom = n if reduction == S.MEAN else 1
    expect = (t.astype(np.float64) * (lse64(x)[:, None] - x.astype(np.float64))).sum() / denom
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(loss, loss_ref, rtol=rtol, atol=rtol * max(scale, 1))
    np.testing.assert_allclose(loss, expect, rtol=rtol, atol=rtol * max(scale, 1))
    if not need_grad:
        assert g is None and g_ref is None
        return
    assert g.dtype == np.dtype(dtype) and np.all(np.isfinite(g))
    close(g, g_ref, dtype, atol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("which", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ce_rows_each_build(which, dtype, numpy_ops, close):
    """The private row kernel through ``.serial`` and ``.parallel`` directly, both target kinds."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((9, 7)) * 1e4).astype(dtype)
    labels = rng.integers(0, 7, 9).astype(np.int64)
    t = rng.random((9, 7)).astype(dtype)
    for use_labels in (True, False):
        out = np.empty(3 * 9)           # the losses, then the kernel's scratch
        losses = out[:9]
        g = np.empty_like(x)
        kernel = S._ce_rows[S.LABELS if use_labels else S.PROBS]
        getattr(kernel, which)(x, labels if use_labels else np.empty(0, np.int64),
                               np.empty((0, 0), dtype) if use_labels else t,
                               np.ones(7, dtype), -100, 0.0, S.SUM, True, g, out)
        if use_labels:
            loss_ref, g_ref = numpy_ops.cross_entropy_forward(x, labels, S.SUM, True)
        else:
            loss_ref, g_ref = numpy_ops.cross_entropy_probs_forward(x, t, S.SUM, True)
        np.testing.assert_allclose(losses.sum(), loss_ref, rtol=1e-6)
        close(g, g_ref, dtype, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_stay_finite(build, numba_ops, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [3e4, 3e4, -3e4]], dtype)
    y = numba_ops.softmax_forward(x)
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]], rtol=1e-6)
    ly = numba_ops.log_softmax_forward(x)
    assert np.all(np.isfinite(ly))
    np.testing.assert_allclose(ly[0], [0, -2e4, -1e4], rtol=1e-6)
    loss, g = numba_ops.cross_entropy_forward(x, np.array([1, 0, 2]), S.MEAN, True)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    np.testing.assert_allclose(loss, (2e4 + np.log(3) + 6e4 + np.log(2)) / 3, rtol=1e-6)
