"""Dropout and Dropout2d layers: inverted scaling, seeding, masks reused by backward, train/eval."""
import numpy as np
import pytest

from fastlayers import backend
from fastlayers.dropout import Dropout, Dropout2d
from fastlayers.gradcheck import gradcheck
from fastlayers.linear import Linear
from fastlayers.module import Sequential
from fastlayers.random import manual_seed


def _x(shape, dtype=np.float32, seed=0):
    # entries bounded away from 0, so "dropped" is exactly "output == 0"
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)).astype(dtype)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_inverted_scaling_and_backward_uses_the_forward_mask(p):
    manual_seed(1)
    layer = Dropout(p)
    x = _x((64, 50))
    y = layer(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    assert 0 < kept.mean() < 1
    assert layer._cache[2].dtype == np.uint8  # a byte mask, not a float copy
    g = _x((64, 50), seed=1)
    dx = layer.backward(g)
    np.testing.assert_array_equal(dx != 0, kept)
    np.testing.assert_allclose(dx[kept], g[kept] / (1 - p), rtol=1e-6)


def test_keep_rate_within_binomial_bounds():
    manual_seed(2)
    n, p = 100_000, 0.3
    kept = int((Dropout(p)(np.ones(n, np.float32)) != 0).sum())
    assert abs(kept - n * (1 - p)) < 5 * np.sqrt(n * p * (1 - p))


def test_eval_is_identity_and_p_edges():
    x = _x((8, 9))
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    np.testing.assert_array_equal(layer.backward(x), x)
    layer = Dropout(0.0)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    layer = Dropout(1.0)
    assert not layer(x).any() and not layer.backward(x).any()
    assert Dropout(1).p == 1.0 and Dropout(0).p == 0.0


def test_manual_seed_drives_the_masks():
    x = _x((32, 33))
    manual_seed(5)
    layer = Dropout(0.5)
    a1, a2 = layer(x), layer(x)
    assert not np.array_equal(a1 != 0, a2 != 0)  # a fresh mask every call
    manual_seed(5)
    np.testing.assert_array_equal(layer(x), a1)
    np.testing.assert_array_equal(layer(x), a2)
    manual_seed(6)
    assert not np.array_equal(layer(x) != 0, a1 != 0)


def test_backends_give_the_same_masks():
    x = _x((4, 3, 5, 5))
    out = []
    for name in ("numba", "numpy"):
        with backend.use_backend(name):
            manual_seed(3)
            out.append([Dropout(0.4)(x), Dropout2d(0.4)(x)])
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (6, 5, 7)])
def test_dropout2d_drops_whole_channels(shape):
    manual_seed(4)
    layer = Dropout2d(0.5)
    x = _x(shape)
    y = layer(x)
    planes = (y != 0).reshape(shape[0], shape[1], -1)
    per_channel = planes.all(axis=2)
    assert (per_channel | ~planes.any(axis=2)).all()  # each channel all kept or all dropped
    assert 0 < per_channel.mean() < 1
    np.testing.assert_allclose(y[y != 0], 2 * x[y != 0], rtol=1e-6)
    assert layer._cache[2].shape == (shape[0] * shape[1],)
    g = _x(shape, seed=2)
    dx = layer.backward(g)
    np.testing.assert_array_equal(dx != 0, y != 0)
    layer.eval()
    assert layer(x) is x


@pytest.mark.parametrize("layer, shape", [(Dropout(0.3), (3, 4)), (Dropout2d(0.3), (2, 3, 2, 2))])
def test_gradcheck(layer, shape):
    manual_seed(0)
    x = np.random.default_rng(0).standard_normal(shape)
    result = gradcheck(layer, x)
    assert result.ok, result


def test_train_eval_switching_through_sequential():
    manual_seed(7)
    model = Sequential(Linear(10, 10), Dropout(0.5), Linear(10, 3))
    x = _x((20, 10))
    assert not np.allclose(model(x), model(x))
    model.eval()
    y = model(x)
    ref = (x @ model[0].weight.data.T + model[0].bias.data) @ model[2].weight.data.T
    np.testing.assert_allclose(y, ref + model[2].bias.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model(x), y)
    model.train()
    manual_seed(7)
    y1 = model(x)
    g = np.ones_like(y1)
    dx = model.backward(g)
    manual_seed(7)
    assert np.array_equal(model(x), y1) and np.array_equal(model.backward(g), dx)


@pytest.mark.parametrize("cls", [Dropout, Dropout2d])
@pytest.mark.parametrize("p, exc", [(-0.1, ValueError), (1.5, ValueError),
                                    (float("nan"), TypeError), ("0.5", TypeError),
                                    (True, TypeError), (None, TypeError)])
def test_bad_p(cls, p, exc):
    with pytest.raises(exc, match="p must be"):
        cls(p)


def test_bad_input():
    manual_seed(0)
    with pytest.raises(ValueError, match="3-D or 4-D"):
        Dropout2d()(np.ones((4, 5), np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        Dropout()([1.0, 2.0])
    with pytest.raises(TypeError, match="float32 or float64"):
        Dropout()(np.ones(3, np.int32))
    layer = Dropout()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones(3, np.float32))
    layer(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3\)"):
        layer.backward(np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="grad_output"):
        layer.backward(np.ones((2, 3)))


def test_repr():
    assert repr(Dropout(0.25)) == "Dropout(p=0.25)"
    assert repr(Dropout2d()) == "Dropout2d(p=0.5)"
