"""Loss modules: float64 gradient checks of every loss and reduction on both backends, values
against independent formulas, ``backward(grad_output)`` scaling, non-contiguous inputs."""
import numpy as np
import pytest

import fastlayers as fl
from fastlayers.gradcheck import gradcheck

REDUCTIONS = ["mean", "sum"]
N, C = 4, 5


def rng(seed=0):
    return np.random.default_rng(seed)


def probs(shape, seed):
    t = rng(seed).random(shape) + 0.05
    return t / t.sum(axis=-1, keepdims=True)


def case(name, seed=0):
    """(loss module factory, input, target, independent float64 loss value for 'sum')."""
    r = rng(seed)
    labels = r.integers(0, C, N)
    x = r.standard_normal((N, C)) * 2
    if name == "MSELoss":
        t = r.standard_normal((N, C))
        return x, t, ((x - t) ** 2).sum()
    if name == "BCELoss":
        p = r.uniform(0.05, 0.95, (N, C))
        t = r.uniform(0, 1, (N, C))
        return p, t, -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum()
    if name == "BCEWithLogitsLoss":
        t = r.uniform(0, 1, (N, C))
        return x, t, (np.logaddexp(0, x) - x * t).sum()
    lse = np.log(np.exp(x).sum(axis=1))
    if name == "CrossEntropyLoss-labels":
        return x, labels, (lse - x[np.arange(N), labels]).sum()
    if name == "CrossEntropyLoss-probs":
        t = probs((N, C), seed + 1)
        return x, t, (t * (lse[:, None] - x)).sum()
    if name == "NLLLoss":
        logp = x - lse[:, None]
        return logp, labels, -logp[np.arange(N), labels].sum()
    if name == "CrossEntropy-labels":
        p = probs((N, C), seed + 2)
        return p, labels, -np.log(p[np.arange(N), labels]).sum()
    if name == "CrossEntropy-probs":
        p, t = probs((N, C), seed + 2), probs((N, C), seed + 3)
        return p, t, -(t * np.log(p)).sum()
    raise KeyError(name)


CLASSES = {
    "MSELoss": fl.MSELoss, "BCELoss": fl.BCELoss, "BCEWithLogitsLoss": fl.BCEWithLogitsLoss,
    "CrossEntropyLoss-labels": fl.CrossEntropyLoss, "CrossEntropyLoss-probs": fl.CrossEntropyLoss,
    "NLLLoss": fl.NLLLoss, "CrossEntropy-labels": fl.CrossEntropy, "CrossEntropy-probs": fl.CrossEntropy,
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(CLASSES))
def test_gradcheck_loss(backend_name, name, reduction):
    x, t, _ = case(name)
    loss = CLASSES[name](reduction=reduction)
    res = gradcheck(loss, x, target=t)
    assert res.ok, res


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(CLASSES))
def test_loss_value_matches_formula(backend_name, name, reduction, dtype):
    x, t, total = case(name, seed=1)
    x = x.astype(dtype)
    if t.dtype.kind == "f":
        t = t.astype(dtype)
    loss = CLASSES[name](reduction=reduction)
    value = loss(x, t)
    assert isinstance(value, float)
    denom = {"mean": x.size if name.startswith(("MSE", "BCE")) else N, "sum": 1}[reduction]
    np.testing.assert_allclose(value, total / denom, rtol=1e-5 if dtype == np.float32 else 1e-12)
    g = loss.backward()
    assert g.shape == x.shape and g.dtype == np.dtype(dtype)
    for scale in (2.5, 0.0):            # each backward needs its own forward
        loss(x, t)
        np.testing.assert_allclose(loss.backward(scale), scale * g, rtol=1e-6)


def test_cross_entropy_loss_equals_log_softmax_then_nll(backend_name):
    x, labels, _ = case("CrossEntropyLoss-labels", seed=2)
    ce = fl.CrossEntropyLoss()
    lsm, nll = fl.LogSoftmax(), fl.NLLLoss()
    a = ce(x, labels)
    b = nll(lsm(x), labels)
    assert a == pytest.approx(b, rel=1e-12)
    np.testing.assert_allclose(ce.backward(), lsm.backward(nll.backward()), rtol=1e-10, atol=1e-15)


def test_cross_entropy_labels_equal_one_hot_probs(backend_name):
    x, labels, _ = case("CrossEntropyLoss-labels", seed=3)
    onehot = np.eye(C)[labels]
    a, b = fl.CrossEntropyLoss(), fl.CrossEntropyLoss()
    assert a(x, labels) == pytest.approx(b(x, onehot), rel=1e-12)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int32, np.int64, np.uint8])
def test_any_integer_label_dtype(backend_name, label_dtype):
    x, labels, total = case("CrossEntropyLoss-labels", seed=4)
    assert fl.CrossEntropyLoss(reduction="sum")(x, labels.astype(label_dtype)) == pytest.approx(
        total, rel=1e-12)


def test_notebook_cross_entropy_matches_softmax_plus_crossentropyloss(backend_name):
    """CrossEntropy on Softmax's output = CrossEntropyLoss on the logits, gradients included."""
    x, labels, _ = case("CrossEntropyLoss-labels", seed=5)
    sm, ce_p, ce_l = fl.Softmax(), fl.CrossEntropy(), fl.CrossEntropyLoss()
    a = ce_p(sm(x), labels)
    b = ce_l(x, labels)
    assert a == pytest.approx(b, rel=1e-10)
    np.testing.assert_allclose(sm.backward(ce_p.backward()), ce_l.backward(), rtol=1e-8, atol=1e-12)


def test_bce_extremes_are_finite(backend_name):
    p = np.array([0.0, 1.0, 0.5, 1.0])
    t = np.array([1.0, 0.0, 0.5, 1.0])
    bce = fl.BCELoss(reduction="sum")
    assert bce(p, t) == pytest.approx(200 + np.log(2))
    assert np.all(np.isfinite(bce.backward()))
    x = np.array([-1e4, 1e4, 0.0])
    logits = fl.BCEWithLogitsLoss(reduction="sum")
    assert logits(x, np.array([1.0, 0.0, 1.0])) == pytest.approx(2e4 + np.log(2))
    np.testing.assert_allclose(logits.backward(), [-1, 1, -0.5])


def test_cross_entropy_huge_logits_finite(backend_name):
    x = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 1e4]], np.float32)
    ce = fl.CrossEntropyLoss()
    value = ce(x, np.array([0, 1]))
    assert np.isfinite(value) and value == pytest.approx(5e3, rel=1e-6)
    assert np.all(np.isfinite(ce.backward()))


@pytest.mark.parametrize("name", list(CLASSES))
def test_non_contiguous_input_and_target(backend_name, name):
    x, t, _ = case(name, seed=6)
    big = np.zeros((N, 2 * C))
    big[:, ::2] = x
    xv = big[:, ::2]
    tv = np.asfortranarray(t) if t.ndim == 2 else t[::-1].copy()[::-1]
    assert not xv.flags.c_contiguous
    a, b = CLASSES[name](), CLASSES[name]()
    assert a(xv, tv) == pytest.approx(b(x, t), rel=1e-14)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-14)


def test_any_input_shape_for_pointwise_losses(backend_name):
    x = rng(7).standard_normal((2, 3, 4))
    t = rng(8).standard_normal((2, 3, 4))
    mse = fl.MSELoss()
    assert mse(x, t) == pytest.approx(((x - t) ** 2).mean(), rel=1e-12)
    np.testing.assert_allclose(mse.backward(), 2 * (x - t) / x.size, rtol=1e-12)
    assert gradcheck(fl.BCEWithLogitsLoss(), x, target=rng(9).uniform(0, 1, x.shape)).ok


@pytest.mark.parametrize("name", list(CLASSES))
def test_empty_batch_mean_is_nan_sum_is_zero(backend_name, name):
    """PyTorch's reductions over no values: the mean is NaN, the sum 0; the gradient is empty."""
    x, t, _ = case(name)
    x, t = x[:0], t[:0]
    for reduction, expected in (("mean", np.nan), ("sum", 0.0)):
        loss = CLASSES[name](reduction=reduction)
        np.testing.assert_array_equal(loss(x, t), expected)
        assert loss.backward().shape == x.shape
