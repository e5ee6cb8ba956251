"""LayerNorm: gradients, PyTorch parity on drawn shapes and options, module behaviour."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlayers as fl
from fastlayers.gradcheck import gradcheck


def _randomise(layer, seed=0):
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5 + (1.0 if p is layer.weight else 0.0)
    return layer


# ----------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("normalized_shape, shape", [(4, (3, 4)), ((2, 3), (2, 2, 3)),
                                                     (5, (5,)), (3, (2, 1, 2, 3))])
@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, True)])
def test_gradcheck(normalized_shape, shape, affine, bias):
    layer = _randomise(fl.LayerNorm(normalized_shape, elementwise_affine=affine, bias=bias,
                                    dtype=np.float64))
    x = np.random.default_rng(1).standard_normal(shape) * 2 + 0.5
    result = gradcheck(layer, x)
    assert result.ok, result
    assert len(list(layer.parameters())) == (2 if affine and bias else 1 if affine else 0)


# ----------------------------------------------------------------------------------- PyTorch parity

@settings(max_examples=20, deadline=None)
@given(lead=st.lists(st.integers(1, 5), min_size=0, max_size=2),
       normalized=st.lists(st.integers(1, 9), min_size=1, max_size=2),
       options=st.sampled_from([(True, True), (True, False), (False, True)]),
       eps=st.sampled_from([1e-5, 1e-3]), offset=st.sampled_from([0.0, 4.0]),
       train=st.booleans(), backend_name=st.sampled_from(["numba", "numpy"]),
       seed=st.integers(0, 2**16))
def test_matches_torch(lead, normalized, options, eps, offset, train, backend_name, seed):
    torch = pytest.importorskip("torch")
    affine, bias = options
    layer = _randomise(fl.LayerNorm(tuple(normalized), eps=eps, elementwise_affine=affine,
                                    bias=bias), seed)
    theirs = fl.to_torch(layer)
    layer.train(train)
    theirs.train(train)
    rng = np.random.default_rng(seed)
    shape = tuple(lead) + tuple(normalized)
    x = (rng.standard_normal(shape) * 2 + offset).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    # The gradients' rounding is relative to terms of size rstd * |g| (dx is their difference,
    # dweight sums g * xhat): rstd is 1 / sqrt(eps) for a constant row, as every row is at D = 1,
    # where PyTorch's xhat is rounding noise times rstd and ours exactly 0.
    axes = tuple(range(len(lead), len(shape)))
    rstd = 1 / np.sqrt(x.astype(np.float64).var(axis=axes) + eps)
    grad_tol = dict(rtol=1e-5, atol=1e-5 * max(1.0, rstd.max(initial=0.0)))
    for _ in range(2):          # the second backward accumulates into the gradients
        with fl.use_backend(backend_name):
            y = layer(x)
            dx = layer.backward(g)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = theirs(xt)
        yt.backward(torch.from_numpy(g))
        tol = dict(rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **grad_tol)
        for name, p in layer.named_parameters():
            tp = dict(theirs.named_parameters())[name]
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), **grad_tol, err_msg=name)
    assert {n for n, _ in layer.named_parameters()} == {n for n, _ in theirs.named_parameters()}


def test_in_a_model_matches_torch():
    """Linear -> LayerNorm -> ReLU -> Linear, as in a transformer's feed-forward block."""
    torch = pytest.importorskip("torch")
    fl.manual_seed(0)
    model = fl.Sequential(fl.Linear(6, 16), fl.LayerNorm(16), fl.ReLU(), fl.Linear(16, 3))
    _randomise(model[1], 2)
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 3))
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    g = rng.standard_normal((4, 5, 3)).astype(np.float32)
    y = model(x)
    dx = model.backward(g)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    for (name, p), (_, tp) in zip(model.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_large_mean_small_spread():
    x = (1e4 + 1e-2 * np.random.default_rng(8).standard_normal((16, 64))).astype(np.float32)
    y = fl.LayerNorm(64, eps=1e-12)(x)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(1, keepdims=True)) / x64.std(1, keepdims=True)
    np.testing.assert_allclose(y, ref, atol=1e-4)


# -------------------------------------------------------------------------------- module behaviour

def test_parameters_state_dict_and_repr_as_torch():
    torch = pytest.importorskip("torch")
    for args, kw in [((8,), {}), (((3, 4),), {"bias": False}),
                     ((5,), {"elementwise_affine": False, "eps": 1e-3})]:
        ours, theirs = fl.LayerNorm(*args, **kw), torch.nn.LayerNorm(*args, **kw)
        assert repr(ours) == repr(theirs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        for k, v in theirs.state_dict().items():
            np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())   # ones and zeros
        assert list(ours.buffers()) == []
    assert fl.LayerNorm([2, 3]).normalized_shape == (2, 3)
    assert fl.LayerNorm(np.int64(7)).weight.shape == (7,)


def test_dtype_empty_batch_and_no_input_grad():
    layer = fl.LayerNorm((2, 3)).double()
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    assert layer(x).dtype == np.float64
    y = layer(np.empty((0, 2, 3)))
    assert y.shape == (0, 2, 3)
    assert layer.backward(np.empty((0, 2, 3))).shape == (0, 2, 3)
    layer.needs_input_grad = False
    layer.zero_grad()
    layer(x)
    assert layer.backward(np.ones((4, 2, 3))) is None
    np.testing.assert_allclose(layer.bias.grad, 4)          # parameter gradients still come
    free = fl.LayerNorm(3, elementwise_affine=False)
    assert free(np.ones((2, 3))).dtype == np.float64       # no parameters: either float dtype
    assert free(np.ones((2, 3), np.float32)).dtype == np.float32


def test_same_in_train_and_eval():
    layer = _randomise(fl.LayerNorm(6))
    x = np.random.default_rng(4).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), layer.eval()(x))


def test_numba_and_numpy_backends_agree():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 48)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out = []
    for name in ("numba", "numpy"):
        layer = _randomise(fl.LayerNorm(48))
        with fl.use_backend(name):
            y = layer(x)
            dx = layer.backward(g)
        out.append((y, dx, layer.weight.grad, layer.bias.grad))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
