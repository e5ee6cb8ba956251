"""AdaptiveAvgPool2d and AdaptiveMaxPool2d: gradients, PyTorch parity (forward, gradient, indices),
output sizes with None, unbatched inputs, repr, and a small network with a global pool."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastlayers as fl
from fastlayers.gradcheck import gradcheck
from fastlayers.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d


def _rel_err(a, e):
    return np.abs(a - e).max() / max(np.abs(e).max(), 1e-30)


@pytest.mark.parametrize("cls", [AdaptiveAvgPool2d, AdaptiveMaxPool2d])
@pytest.mark.parametrize("size", [1, (3, 2), (None, 4), (8, 5)])
def test_gradcheck_float64(cls, size):
    # distinct values, well separated, so the max is stable under +-eps
    x = np.random.default_rng(0).permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) * 0.01
    assert gradcheck(cls(size), x).ok
    assert gradcheck(cls(size), x[0]).ok                                  # unbatched


@st.composite
def pool_cases(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    size = draw(st.one_of(st.integers(1, 13), st.tuples(st.one_of(st.none(), st.integers(1, 13)),
                                                         st.one_of(st.none(), st.integers(1, 13)))))
    return dict(shape=(draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w), size=size,
                unbatched=draw(st.booleans()), ties=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@settings(max_examples=25, deadline=None)
@given(case=pool_cases())
def test_parity_with_torch_float32(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"][1:] if case["unbatched"] else case["shape"]
    x = (rng.integers(-2, 3, shape) if case["ties"] else rng.standard_normal(shape) + 2)
    x = x.astype(np.float32)
    nn = torch.nn
    for ours, theirs in ((AdaptiveAvgPool2d(case["size"]), nn.AdaptiveAvgPool2d(case["size"])),
                         (AdaptiveMaxPool2d(case["size"], return_indices=True),
                          nn.AdaptiveMaxPool2d(case["size"], return_indices=True))):
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        y = ours(x)
        if isinstance(ours, AdaptiveMaxPool2d):
            (y, idx), (ty, tidx) = y, ty
            assert idx.dtype == np.int64
            np.testing.assert_array_equal(idx, tidx.numpy())
            np.testing.assert_array_equal(y, ty.detach().numpy())
        assert y.shape == tuple(ty.shape) and y.dtype == np.float32
        assert _rel_err(y, ty.detach().numpy()) < 1e-5
        g = rng.standard_normal(y.shape).astype(np.float32)
        ty.backward(torch.from_numpy(g))
        dx = ours.backward(g)
        assert dx.shape == x.shape and dx.dtype == np.float32
        assert _rel_err(dx, tx.grad.numpy()) < 1e-5
        assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("cls", [AdaptiveAvgPool2d, AdaptiveMaxPool2d])
def test_output_sizes(cls):
    x = np.zeros((2, 3, 5, 7), np.float32)
    assert cls(1)(x).shape == (2, 3, 1, 1)
    assert cls((None, 2))(x).shape == (2, 3, 5, 2)
    assert cls([4, None])(x).shape == (2, 3, 4, 7)
    assert cls((None, None))(x).shape == x.shape
    assert cls((9, 11))(x[0]).shape == (3, 9, 11)                 # larger than the input
    assert cls([4, None]).output_size == (4, None)
    layer = cls(2)
    layer(np.zeros((1, 1, 4, 4)))                                  # float64 too (no parameters)
    assert layer.backward(np.ones((1, 1, 2, 2))).dtype == np.float64


def test_max_return_indices_and_numpy_backend():
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8))
    g = np.random.default_rng(1).standard_normal((2, 3, 4, 3))
    runs = []
    for name in ("numba", "numpy"):
        with fl.use_backend(name):
            plain, indexed = AdaptiveMaxPool2d((4, 3)), AdaptiveMaxPool2d((4, 3), True)
            y, (yi, idx) = plain(x), indexed(x)
            np.testing.assert_array_equal(y, yi)
            np.testing.assert_array_equal(np.take_along_axis(x.reshape(2, 3, -1),
                                                             idx.reshape(2, 3, -1), -1),
                                          y.reshape(2, 3, -1))
            avg = AdaptiveAvgPool2d((4, 3))
            runs.append((y, idx, plain.backward(g), avg(x), avg.backward(g)))
    for a, e in zip(*runs):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_global_pool_network_matches_torch():
    # Conv2d (depthwise) -> ReLU -> AdaptiveAvgPool2d(1) -> Flatten -> Linear, and the max pool
    torch = pytest.importorskip("torch")
    nn = torch.nn
    for pool, tpool in ((fl.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d(1)),
                        (fl.AdaptiveMaxPool2d((1, 1)), nn.AdaptiveMaxPool2d((1, 1)))):
        fl.manual_seed(0)
        model = fl.Sequential(fl.Conv2d(4, 8, 3, padding="same", groups=4), fl.ReLU(), pool,
                              fl.Flatten(), fl.Linear(8, 3))
        tmodel = nn.Sequential(nn.Conv2d(4, 8, 3, padding="same", groups=4), nn.ReLU(), tpool,
                               nn.Flatten(), nn.Linear(8, 3))
        tmodel.load_state_dict({k: torch.from_numpy(v.copy())
                                for k, v in model.state_dict().items()})
        x = np.random.default_rng(2).standard_normal((6, 4, 10, 9)).astype(np.float32)
        tx = torch.tensor(x, requires_grad=True)
        ty = tmodel(tx)
        y = model(x)
        assert _rel_err(y, ty.detach().numpy()) < 1e-5
        g = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
        ty.backward(torch.from_numpy(g))
        assert _rel_err(model.backward(g), tx.grad.numpy()) < 1e-5
        tparams = dict(tmodel.named_parameters())
        for name, p in model.named_parameters():
            assert _rel_err(p.grad, tparams[name].grad.numpy()) < 1e-5, name
