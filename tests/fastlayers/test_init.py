"""fl.init against torch.nn.init: gains exactly, and every initialiser's distribution (bounds, mean,
spread) against torch's own draws at the same shape, fan mode and nonlinearity."""
import math
import warnings

import numpy as np
import pytest

import fastlayers as fl
from fastlayers import init

torch = pytest.importorskip("torch")
tinit = torch.nn.init

SHAPES = [(256, 512), (64, 32, 3, 3), (512, 128)]


@pytest.mark.parametrize("nonlinearity,param", [
    ("linear", None), ("conv2d", None), ("conv_transpose3d", None), ("sigmoid", None),
    ("tanh", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 3),
    ("selu", None)])
def test_calculate_gain_matches_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        tinit.calculate_gain(nonlinearity, param), rel=1e-15)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", True)


def _both(fn, shape, dtype=np.float32, **kw):
    """Our draw and torch's at ``shape`` with the same arguments."""
    ours = np.zeros(shape, dtype)
    theirs = torch.zeros(shape, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    getattr(init, fn)(ours, **kw)
    getattr(tinit, fn)(theirs, **kw)
    return ours.astype(np.float64), theirs.numpy().astype(np.float64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn,kw", [
    ("xavier_uniform_", {}), ("xavier_uniform_", {"gain": 2.0}), ("xavier_normal_", {}),
    ("kaiming_uniform_", {}), ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {"nonlinearity": "relu"}),
    ("kaiming_normal_", {"a": 0.1, "mode": "fan_out"}),
    ("uniform_", {"a": -0.5, "b": 2.0}), ("normal_", {"mean": 1.0, "std": 0.3}),
    ("trunc_normal_", {"std": 0.02}), ("trunc_normal_", {"mean": 0.5, "a": 1.0, "b": 3.0}),
])
def test_distribution_matches_torch(shape, fn, kw):
    ours, theirs = _both(fn, shape, **kw)
    n = ours.size
    # the spread agrees to a few standard errors of a standard deviation (about 1/sqrt(2n))
    assert ours.std() == pytest.approx(theirs.std(), rel=8 / math.sqrt(n))
    assert abs(ours.mean() - theirs.mean()) < 8 * theirs.std() / math.sqrt(n)
    # the support is the same: the extremes of n draws sit within a small margin of each other
    if fn == "trunc_normal_":
        assert kw.get("a", -2.0) <= ours.min() and ours.max() <= kw.get("b", 2.0)
    span = theirs.max() - theirs.min()
    if fn.endswith("uniform_"):
        assert ours.min() >= theirs.min() - 0.01 * span
        assert ours.max() <= theirs.max() + 0.01 * span
        assert ours.min() <= theirs.min() + 0.01 * span
        assert ours.max() >= theirs.max() - 0.01 * span


def test_trunc_normal_far_tail_stays_in_bounds():
    w = np.zeros((100, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init.trunc_normal_(w, mean=0.0, std=1.0, a=4.0, b=5.0)
    assert 4.0 <= w.min() and w.max() <= 5.0
    assert w.mean() == pytest.approx(4.2, abs=0.05)      # most mass near the lower bound


@pytest.mark.parametrize("shape", [(10, 30), (30, 10), (16, 4, 3, 3), (5, 5)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal(shape, gain):
    w = init.orthogonal_(np.zeros(shape), gain=gain)
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(gram.shape[0]), atol=1e-12)


@pytest.mark.parametrize("fn,value", [("zeros_", 0.0), ("ones_", 1.0)])
def test_fills(fn, value):
    w = np.full((3, 4), 7.0, np.float32)
    assert getattr(init, fn)(w) is w
    np.testing.assert_array_equal(w, np.full((3, 4), value, np.float32))


def test_constant_and_eye():
    w = init.constant_(np.zeros((2, 3)), -1.5)
    np.testing.assert_array_equal(w, np.full((2, 3), -1.5))
    np.testing.assert_array_equal(init.eye_(np.zeros((2, 3))), torch.eye(2, 3).numpy())
    assert np.isnan(init.constant_(np.zeros(2), float("nan"))).all()


def test_parameter_is_filled_in_place_in_its_dtype():
    lin = fl.Linear(20, 30)
    data = lin.weight.data
    assert init.kaiming_normal_(lin.weight) is lin.weight
    assert lin.weight.data is data and data.dtype == np.float32
    assert data.std() > 0


def test_seeded_by_manual_seed_and_generator():
    def draw():
        return init.xavier_uniform_(np.zeros((8, 8)))
    fl.manual_seed(5)
    a = draw()
    fl.manual_seed(5)
    np.testing.assert_array_equal(a, draw())
    assert not np.array_equal(a, draw())
    g1 = init.normal_(np.zeros(5), generator=np.random.default_rng(1))
    g2 = init.normal_(np.zeros(5), generator=np.random.default_rng(1))
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: init.xavier_uniform_(np.zeros(5)), ValueError, "fewer than 2 dimensions"),
    (lambda: init.kaiming_uniform_(np.zeros(5)), ValueError, "fewer than 2 dimensions"),
    (lambda: init.kaiming_normal_(np.zeros((2, 2)), mode="fan_avg"), ValueError, "mode"),
    (lambda: init.kaiming_normal_(np.zeros((2, 2)), nonlinearity="swish"), ValueError,
     "nonlinearity"),
    (lambda: init.orthogonal_(np.zeros(3)), ValueError, "2 or more dimensions"),
    (lambda: init.eye_(np.zeros((2, 2, 2))), ValueError, "2-D"),
    (lambda: init.uniform_(np.zeros(3), 1.0, 0.0), ValueError, "a must be at most b"),
    (lambda: init.normal_(np.zeros(3), std=-1.0), ValueError, "std"),
    (lambda: init.trunc_normal_(np.zeros(3), a=1.0, b=1.0), ValueError, "a must be less than b"),
    (lambda: init.normal_(np.zeros(3, np.int64)), TypeError, "float32 or float64"),
    (lambda: init.normal_([0.0, 1.0]), TypeError, "Parameter or a numpy.ndarray"),
    (lambda: init.normal_(np.zeros(3), generator=1), TypeError, "generator"),
    (lambda: init.constant_(np.zeros(3), "1"), ValueError, "val"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_arguments_leave_the_tensor_alone():
    w = np.arange(6.0).reshape(2, 3)
    with pytest.raises(ValueError):
        init.kaiming_uniform_(w, mode="bad")
    np.testing.assert_array_equal(w, np.arange(6.0).reshape(2, 3))


def test_zero_element_tensor_warns_and_is_unchanged():
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_uniform_(np.zeros((0, 3)))
