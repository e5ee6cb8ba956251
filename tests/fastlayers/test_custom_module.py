"""A custom Module with its own forward and backward, written as the Module docstring and the README
show: it trains inside a Sequential, passes finite differences, refuses a second backward, and a
failed Sequential forward after it leaves what it saved untouched."""
import numpy as np
import pytest

import fastlayers as fl
from tests.fastlayers.state import fingerprint


class Scale(fl.Module):
    """y = x * weight, a learned weight per feature."""

    def __init__(self, features, dtype=np.float32):
        super().__init__()
        self.weight = fl.Parameter(np.linspace(0.5, 1.5, features).astype(dtype))

    def forward(self, x):
        self.save_for_backward(x)
        return x * self.weight.data

    def backward(self, grad_output):
        (x,) = self.saved_tensors
        self.weight.grad_buffer()[...] += (grad_output * x).sum(axis=0)
        return grad_output * self.weight.data


def test_gradcheck():
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert fl.gradcheck(Scale(3, np.float64), x)


def test_trains_in_a_sequential_and_matches_the_formula():
    fl.manual_seed(0)
    model = fl.Sequential(fl.Linear(4, 3), Scale(3), fl.ReLU(), fl.Linear(3, 2))
    opt = fl.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    y = np.random.default_rng(2).integers(0, 2, 8)
    loss_fn = fl.CrossEntropyLoss()
    losses = []
    for _ in range(30):
        losses.append(loss_fn(model(x), y))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < 0.7 * losses[0]
    # the weight's gradient is the formula's: sum over the batch of grad_output * input
    h = model[0](x)
    out = model[1](h)
    g = np.ones_like(out)
    model[1].weight.grad = None
    model[1].backward(g)
    np.testing.assert_allclose(model[1].weight.grad, h.sum(axis=0), rtol=1e-6)


def test_second_backward_and_backward_before_forward_raise():
    layer = Scale(3)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3), np.float32))
    layer(np.ones((2, 3), np.float32))
    layer.backward(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="second time"):
        layer.backward(np.ones((2, 3), np.float32))


def test_failed_sequential_forward_restores_what_it_saved():
    fl.manual_seed(0)
    model = fl.Sequential(Scale(3), fl.Linear(4, 2))
    with pytest.raises(ValueError):
        model(np.ones((2, 3), np.float32))          # Scale runs, then Linear(4, 2) refuses 3 features
    assert model[0].__dict__["_cache"] is None
    good = fl.Sequential(Scale(4), fl.Linear(4, 2))
    good(np.ones((2, 4), np.float32))
    good.append(fl.Linear(3, 2))                    # a head that refuses Linear(4, 2)'s output
    before = fingerprint(good)
    with pytest.raises(ValueError):
        good(np.full((2, 4), 2.0, np.float32))
    assert fingerprint(good) == before
