"""The loss kernels' options against their NumPy twins and independent float64 formulas, on the
serial and parallel builds: class weights, ignore_index, label smoothing and (N, C, S) inputs of
cross-entropy and nll; reduction NONE everywhere; the l1/huber/smooth_l1 kinds; BCE's weight and
BCE-with-logits' pos_weight."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import losses as L
from kernels import softmax as S

DTYPES = [np.float32, np.float64]
REDUCTIONS = [S.SUM, S.MEAN, S.NONE]


def rtol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-10


def assert_loss(actual, expected, reduction, dtype, scale=1.0):
    """``actual`` is a float (SUM, MEAN) or an array of the input's dtype (NONE) close to the
    float64 ``expected``; ``scale`` bounds the magnitude of the terms (absolute error floor)."""
    if reduction == S.NONE:
        assert isinstance(actual, np.ndarray) and actual.dtype == np.dtype(dtype)
        assert actual.shape == np.shape(expected)
    else:
        assert isinstance(actual, float)
    np.testing.assert_allclose(actual, expected, rtol=rtol(dtype), atol=rtol(dtype) * scale,
                               equal_nan=True)


def assert_grad(actual, expected, dtype):
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape
    floor = max(float(np.abs(expected).max(initial=0.0)), 1e-3)
    np.testing.assert_allclose(actual, expected, rtol=rtol(dtype), atol=rtol(dtype) * floor)


def reduce(losses, grads, norm, reduction):
    """The reference loss and gradient under ``reduction`` (``norm``: MEAN's divisor)."""
    if reduction == S.NONE:
        return losses, grads
    scale = 1.0 if reduction == S.SUM else (1.0 / norm if norm else np.inf)
    with np.errstate(invalid="ignore"):
        return losses.sum() * scale, np.where(grads != 0, grads * scale, 0.0)


# ------------------------------------------------------------------------------- cross-entropy, nll

def class_reference(x, target, weight, ignore_index, eps, kind):
    """Per-(sample, position) losses, gradients and MEAN divisor of cross-entropy (``kind`` "labels"
    or "probs") or nll, one row at a time in float64 (no code shared with the twins)."""
    n, c = x.shape[:2]
    s = int(np.prod(x.shape[2:]))
    x3 = x.reshape(n, c, s).astype(np.float64)
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    losses, grads, norm = np.zeros((n, s)), np.zeros((n, c, s)), 0.0
    for i in range(n):
        for j in range(s):
            z = x3[i, :, j]
            if kind == "probs":
                q = w * ((1 - eps) * target.reshape(n, c, s)[i, :, j] + eps / c)
                norm += 1
            else:
                y = target.reshape(n, s)[i, j]
                if y == ignore_index:
                    continue
                norm += w[y]
                if kind == "nll":
                    losses[i, j] = -w[y] * z[y]
                    grads[i, y, j] = -w[y]
                    continue
                q = eps / c * w
                q[y] += (1 - eps) * w[y]
            logp = z - (z.max() + np.log(np.sum(np.exp(z - z.max()))))
            losses[i, j] = -np.dot(q, logp)
            grads[i, :, j] = np.exp(logp) * q.sum() - q
    out_shape = (n,) + x.shape[2:]
    return losses.reshape(out_shape), grads.reshape(x.shape), norm


@st.composite
def class_cases(draw, kind):
    """(x, target, weight, ignore_index, label_smoothing): x (N, C) or (N, C, S); some targets
    set to ignore_index."""
    n, c = draw(st.integers(0, 20)), draw(st.integers(1, 12))
    spatial = draw(st.sampled_from([(), (1,), (3,), (5,)]))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = (rng.standard_normal((n, c) + spatial) * draw(st.sampled_from([1.0, 30.0]))).astype(dtype)
    weight = rng.uniform(0.1, 2.0, c).astype(dtype) if draw(st.booleans()) else None
    eps = draw(st.sampled_from([0.0, 0.0, 1.0]) | st.floats(0.0, 1.0))
    ignore = draw(st.sampled_from([-100, 0, c - 1, 255]))
    if kind == "probs":
        t = rng.random(x.shape)
        return x, (t / t.sum(axis=1, keepdims=True)).astype(dtype), weight, ignore, eps
    labels = rng.integers(0, c, (n,) + spatial)
    labels[rng.random(labels.shape) < draw(st.sampled_from([0.0, 0.3]))] = ignore
    return x, labels.astype(np.int64), weight, ignore, eps


def run_class(ops, kind, x, target, weight, ignore, eps, reduction, need_grad):
    if kind == "labels":
        return ops.cross_entropy_forward(x, target, reduction, need_grad, weight, ignore, eps)
    if kind == "probs":
        return ops.cross_entropy_probs_forward(x, target, reduction, need_grad, weight, eps)
    return ops.nll_forward(x, target, reduction, need_grad, weight, ignore)


@pytest.mark.parametrize("kind", ["labels", "probs", "nll"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data(), need_grad=st.booleans())
def test_class_losses_match_twin_and_reference(build, numba_ops, numpy_ops, kind, reduction, data,
                                               need_grad):
    x, target, weight, ignore, eps = data.draw(class_cases("probs" if kind == "probs" else kind))
    if kind == "nll":
        eps = 0.0
    loss, g = run_class(numba_ops, kind, x, target, weight, ignore, eps, reduction, need_grad)
    loss_np, g_np = run_class(numpy_ops, kind, x, target, weight, ignore, eps, reduction,
                              need_grad)
    ref_loss, ref_g = reduce(*class_reference(x, target, weight, ignore, eps, kind), reduction)
    scale = float(np.abs(x).max(initial=1.0))
    assert_loss(loss, ref_loss, reduction, x.dtype, scale)
    assert_loss(loss_np, ref_loss, reduction, x.dtype, scale)
    if not need_grad:
        assert g is None and g_np is None
        return
    assert_grad(g, ref_g, x.dtype)
    assert_grad(g_np, ref_g, x.dtype)


@pytest.mark.parametrize("kind", ["labels", "nll"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (0, 3)])
def test_every_target_ignored(build, numba_ops, numpy_ops, kind, shape):
    """MEAN over no counted target is NaN (PyTorch's 0/0) with a zero gradient; SUM is 0."""
    x = np.random.default_rng(0).standard_normal(shape)
    w = np.array([0.5, 1.0, 2.0])
    target = np.full(shape[:1] + shape[2:], 7, np.int64)
    for ops in (numba_ops, numpy_ops):
        for reduction, expect in ((S.MEAN, np.nan), (S.SUM, 0.0)):
            loss, g = run_class(ops, kind, x, target, w, 7, 0.25, reduction, True)
            np.testing.assert_array_equal(loss, expect)
            np.testing.assert_array_equal(g, np.zeros(shape))
        loss, g = run_class(ops, kind, x, target, w, 7, 0.25, S.NONE, True)
        np.testing.assert_array_equal(loss, np.zeros(target.shape))


@pytest.mark.parametrize("which", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ce_rows_options_each_build(which, dtype):
    """The row kernel directly on each build, over several row blocks, every option at once."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3 * S.ROWS + 5, 6)).astype(dtype)
    labels = rng.integers(0, 6, x.shape[0]).astype(np.int64)
    labels[::4] = 2
    w = rng.uniform(0.1, 2.0, 6).astype(dtype)
    out, g = np.empty(3 * x.shape[0]), np.empty_like(x)   # the losses, then scratch
    losses = out[:x.shape[0]]
    kernel = getattr(S._ce_rows[S.SMOOTHED], which)
    scale = kernel(x, labels, np.empty((0, 0), dtype), w, 2, 0.3, S.MEAN, True, g, out)
    ref_losses, ref_g, norm = class_reference(x, labels, w, 2, 0.3, "labels")
    assert scale == pytest.approx(1 / norm, rel=1e-12)
    np.testing.assert_allclose(losses, ref_losses, rtol=rtol(dtype))
    assert_grad(g, ref_g / norm, dtype)


# ---------------------------------------------------------------------------------------- pointwise

def pointwise_reference(kind, p, t, param=1.0, w=None, pw=None):
    """Per-element losses and gradients in float64, written without the twins' code."""
    p, t = p.astype(np.float64), t.astype(np.float64)
    d = p - t
    a = np.abs(d)
    if kind == L.MSE:
        loss, g = a ** 2, d + d
    elif kind == L.L1 or (kind == L.SMOOTH_L1 and param == 0):
        loss, g = a, (d > 0).astype(float) - (d < 0)
    elif kind in (L.HUBER, L.SMOOTH_L1):
        small = np.minimum(a, param)
        loss = 0.5 * small ** 2 + param * (a - small)
        g = np.where(a < param, d, param * np.sign(d))
        if kind == L.SMOOTH_L1:
            loss, g = loss / param, g / param
    elif kind == L.BCE:
        with np.errstate(divide="ignore"):
            loss = -(t * np.clip(np.log(p), -100, None) + (1 - t) * np.clip(np.log(1 - p), -100,
                                                                              None))
        g = (p - t) / np.maximum(p * (1 - p), 1e-12)
    else:
        pw = np.ones_like(p) if pw is None else pw.astype(np.float64)
        sig = 0.5 * (1 + np.tanh(p / 2))
        loss = pw * t * np.logaddexp(0, -p) + (1 - t) * np.logaddexp(0, p)
        g = sig * (pw * t + 1 - t) - pw * t
    if w is not None:
        loss, g = loss * w, g * w
    return loss, g


POINTWISE = {  # kind -> (kernel name, keyword arguments drawn per example)
    L.MSE: "mse_forward", L.L1: "l1_forward", L.HUBER: "huber_forward",
    L.SMOOTH_L1: "smooth_l1_forward", L.BCE: "bce_forward", L.BCE_LOGITS: "bce_logits_forward",
}
shapes = st.one_of(st.tuples(st.integers(0, 50)), st.tuples(st.integers(1, 9), st.integers(1, 13)),
                   st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)))


def pointwise_inputs(kind, shape, dtype, rng, param=1.0):
    """Input, target; for the difference losses some elements exactly at the kinks (d = 0 and
    |d| = param)."""
    if kind == L.BCE:
        p = rng.uniform(0, 1, shape)
        if p.size > 2:
            p.reshape(-1)[:2] = 0.0, 1.0
        return p.astype(dtype), rng.uniform(0, 1, shape).astype(dtype)
    if kind == L.BCE_LOGITS:
        return ((rng.standard_normal(shape) * 3).astype(dtype),
                rng.uniform(0, 1, shape).astype(dtype))
    p = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    flat_p, flat_t = p.reshape(-1), t.reshape(-1)
    if p.size > 3:
        flat_t[0] = flat_p[0]
        flat_p[1:3] = 0.0
        flat_t[1:3] = -dtype(param), dtype(param)
    return p, t


@pytest.mark.parametrize("kind", list(POINTWISE))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       need_grad=st.booleans(), param=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       weighted=st.booleans(), pos_weighted=st.booleans())
def test_pointwise_kinds_match_twin_and_reference(build, numba_ops, numpy_ops, kind, reduction,
                                                  shape, dtype, seed, need_grad, param, weighted,
                                                  pos_weighted):
    rng = np.random.default_rng(seed)
    if kind == L.HUBER and param == 0.0:
        param = 0.25                                    # delta > 0
    p, t = pointwise_inputs(kind, shape, dtype, rng, param)
    kwargs, w, pw = {}, None, None
    if kind in (L.HUBER, L.SMOOTH_L1):
        kwargs["delta" if kind == L.HUBER else "beta"] = param
    if kind in (L.BCE, L.BCE_LOGITS) and weighted:
        w = kwargs["weight"] = rng.uniform(0, 2, shape).astype(dtype)
    if kind == L.BCE_LOGITS and pos_weighted:
        pw = kwargs["pos_weight"] = rng.uniform(0, 3, shape).astype(dtype)
    name = POINTWISE[kind]
    loss, g = getattr(numba_ops, name)(p, t, reduction, need_grad, **kwargs)
    loss_np, g_np = getattr(numpy_ops, name)(p, t, reduction, need_grad, **kwargs)
    ref = pointwise_reference(kind, p, t, param, w, pw)
    ref_loss, ref_g = reduce(*ref, p.size, reduction)
    assert_loss(loss, ref_loss, reduction, dtype)
    assert_loss(loss_np, ref_loss, reduction, dtype)
    if not need_grad:
        assert g is None and g_np is None
        return
    assert_grad(g, ref_g, dtype)
    assert_grad(g_np, ref_g, dtype)


def test_gradients_at_the_kinks(build, numba_ops):
    """sign(0) = 0 for l1 (and smooth_l1 with beta 0); huber's and smooth_l1's gradients at
    |d| = delta are +-delta and +-1; at d = 0 they are 0 (PyTorch's definitions)."""
    p = np.array([0.0, 0.5, -0.5, 2.0, -2.0])
    t = np.zeros(5)
    _, g = numba_ops.l1_forward(p, t, S.SUM, True)
    np.testing.assert_array_equal(g, [0, 1, -1, 1, -1])
    _, g = numba_ops.smooth_l1_forward(p, t, S.SUM, True, 0.0)
    np.testing.assert_array_equal(g, [0, 1, -1, 1, -1])
    _, g = numba_ops.huber_forward(p, t, S.SUM, True, 0.5)
    np.testing.assert_array_equal(g, [0, 0.5, -0.5, 0.5, -0.5])
    _, g = numba_ops.smooth_l1_forward(p, t, S.SUM, True, 0.5)
    np.testing.assert_array_equal(g, [0, 1, -1, 1, -1])
    loss, _ = numba_ops.huber_forward(p, t, S.NONE, True, 0.5)
    np.testing.assert_array_equal(loss, [0, 0.125, 0.125, 0.875, 0.875])


@pytest.mark.parametrize("which", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [L.L1, L.HUBER, L.SMOOTH_L1, L.BCE, L.BCE_LOGITS])
def test_pointwise_options_each_build_over_several_chunks(which, dtype, kind):
    """``_pointwise`` through ``.serial`` and ``.parallel`` over more than one CHUNK, with weights,
    pos_weight (bce_logits) and the per-element output of NONE."""
    n = 2 * L.CHUNK + 123
    rng = np.random.default_rng(3)
    p, t = pointwise_inputs(kind, (n,), dtype, rng, 0.7)
    w = rng.uniform(0, 2, n).astype(dtype)
    pw = rng.uniform(0, 3, n).astype(dtype) if kind == L.BCE_LOGITS else np.empty(0, dtype)
    partial = np.zeros((n + L.CHUNK - 1) // L.CHUNK)
    g, out = np.empty_like(p), np.empty_like(p)
    getattr(L._pointwise, which)(p, t, kind, 0.7, 1.0, True, g, partial, w, pw, out)
    ref_loss, ref_g = pointwise_reference(kind, p, t, 0.7, w, pw if pw.size else None)
    np.testing.assert_allclose(partial.sum(), ref_loss.sum(), rtol=rtol(dtype))
    assert_loss(out, ref_loss, S.NONE, dtype)
    assert_grad(g, ref_g, dtype)
