"""Linear: gradient checks on both backends, the fused Linear + activation step against the two
layers one after the other, N-D input, gradient accumulation, PyTorch's initialisation."""
import math

import numpy as np
import pytest

import fastlayers as fl
from tests.fastlayers.test_layers import ACTIVATIONS, away_from_zero, check


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3,), (2, 3, 3)])
def test_gradcheck_linear(backend_name, bias, shape):
    fl.manual_seed(0)
    lin = fl.Linear(3, 5, bias=bias).double()
    res = check(lin, away_from_zero(shape, 1))
    assert res.where != "nothing to check"


def _fused_model(act, seed):
    """Linear + activation in a Sequential (the fused path) whose pre-activations avoid the kink."""
    for s in range(seed, seed + 50):
        fl.manual_seed(s)
        lin = fl.Linear(4, 3).double()
        x = away_from_zero((5, 4), s)
        pre = x @ lin.weight.data.T + lin.bias.data
        if np.abs(pre).min() > 1e-3:
            return fl.Sequential(lin, ACTIVATIONS[act]()), x
    raise AssertionError("no seed found")


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_gradcheck_fused_linear_activation(backend_name, act):
    model, x = _fused_model(act, 0)
    check(model, x)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_fused_equals_unfused(backend_name, act):
    model, x = _fused_model(act, 3)
    lin, a = model[0], model[1]
    y = model(x)
    assert model.steps == [(lin, a)]        # really fused: the activation is not a separate step
    g = np.random.default_rng(0).standard_normal(y.shape)
    lin.zero_grad()
    dx = model.backward(g)
    fused_grads = [p.grad.copy() for p in lin.parameters()]
    lin.zero_grad()
    y2 = a(lin(x))
    dx2 = lin.backward(a.backward(g))
    np.testing.assert_allclose(y, y2, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, dx2, rtol=1e-12, atol=1e-15)
    for gf, p in zip(fused_grads, lin.parameters()):
        np.testing.assert_allclose(gf, p.grad, rtol=1e-12, atol=1e-15)


def test_linear_on_3d_input_and_gradient_accumulation(backend_name):
    fl.manual_seed(0)
    lin = fl.Linear(3, 2).double()
    x = np.random.default_rng(9).standard_normal((2, 4, 3))
    y = lin(x)
    assert y.shape == (2, 4, 2)
    np.testing.assert_allclose(y, x @ lin.weight.data.T + lin.bias.data, rtol=1e-12)
    g = np.ones_like(y)
    dx = lin.backward(g)
    np.testing.assert_allclose(dx, g @ lin.weight.data, rtol=1e-12)
    w1 = lin.weight.grad.copy()
    lin(x)
    lin.backward(g)
    np.testing.assert_allclose(lin.weight.grad, 2 * w1, rtol=1e-12)   # accumulates
    np.testing.assert_allclose(lin.bias.grad, 16.0)


@pytest.mark.parametrize("in_features,out_features", [(1, 1), (7, 3), (784, 128)])
def test_linear_default_init(in_features, out_features):
    fl.manual_seed(0)
    lin = fl.Linear(in_features, out_features)
    bound = 1 / math.sqrt(in_features)
    assert lin.weight.shape == (out_features, in_features)
    assert lin.bias.shape == (out_features,)
    assert lin.weight.dtype == lin.bias.dtype == np.float32
    for p in (lin.weight, lin.bias):
        assert np.all(np.abs(p.data) <= bound)
        np.testing.assert_array_equal(p.grad, 0)
    if lin.weight.size > 1000:        # fills the interval, roughly uniformly
        assert np.abs(lin.weight.data).max() > 0.95 * bound
        assert abs(lin.weight.data.mean()) < 0.05 * bound
        assert lin.weight.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
