"""Embedding: initialisation, gradients, PyTorch parity (repeated indices, padding_idx),
from_pretrained and freeze, module behaviour."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlayers as fl
from fastlayers.gradcheck import gradcheck


# ----------------------------------------------------------------------------------- initialisation

def test_weight_is_standard_normal_from_the_seed():
    fl.manual_seed(3)
    a = fl.Embedding(400, 50)
    fl.manual_seed(3)
    b = fl.Embedding(400, 50)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    w = a.weight.data
    assert w.shape == (400, 50) and w.dtype == np.float32
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02
    assert not np.array_equal(fl.Embedding(400, 50).weight.data, w)   # the generator moved on


@pytest.mark.parametrize("padding_idx, row", [(0, 0), (4, 4), (-1, 9), (-10, 0)])
def test_padding_row_starts_at_zero(padding_idx, row):
    layer = fl.Embedding(10, 3, padding_idx=padding_idx)
    assert layer.padding_idx == row
    np.testing.assert_array_equal(layer.weight.data[row], 0)
    assert np.count_nonzero(layer.weight.data.any(axis=1)) == 9
    torch = pytest.importorskip("torch")
    assert torch.nn.Embedding(10, 3, padding_idx=padding_idx).padding_idx == row
    assert repr(layer) == f"Embedding(10, 3, padding_idx={row})"


# ----------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("shape", [(7,), (2, 3), ()])
def test_gradcheck_weight(shape):
    fl.manual_seed(0)
    layer = fl.Embedding(5, 3, dtype=np.float64)
    idx = np.random.default_rng(1).integers(0, 5, shape)     # repeated indices among them
    result = gradcheck(layer, idx)
    assert result.ok, result
    assert result.where.startswith("weight")


def test_padding_row_gets_no_gradient():
    layer = fl.Embedding(4, 2, padding_idx=1)
    layer.weight.data[1] = 7.0                  # a pad of another value is read, never trained
    idx = np.array([[1, 2], [1, 1]])
    y = layer(idx)
    np.testing.assert_array_equal(y[0, 0], [7, 7])
    assert layer.backward(np.ones((2, 2, 2), np.float32)) is None
    np.testing.assert_array_equal(layer.weight.grad, [[0, 0], [0, 0], [1, 1], [0, 0]])


# ----------------------------------------------------------------------------------- PyTorch parity

@settings(max_examples=20, deadline=None)
@given(v=st.integers(1, 30), d=st.integers(1, 12),
       shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       padded=st.booleans(), index_dtype=st.sampled_from([np.int32, np.int64]),
       backend_name=st.sampled_from(["numba", "numpy"]), seed=st.integers(0, 2**16))
def test_matches_torch(v, d, shape, padded, index_dtype, backend_name, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    padding_idx = int(rng.integers(-v, v)) if padded else None
    fl.manual_seed(seed)
    layer = fl.Embedding(v, d, padding_idx=padding_idx)
    theirs = torch.nn.Embedding(v, d, padding_idx=padding_idx)
    theirs.load_state_dict({"weight": torch.from_numpy(layer.weight.data)})
    # Few distinct values, so that indices repeat (and hit the padding row).
    idx = rng.integers(0, min(v, 4), shape).astype(index_dtype)
    for _ in range(2):          # the second backward accumulates into the gradient
        g = rng.standard_normal(tuple(shape) + (d,)).astype(np.float32)
        with fl.use_backend(backend_name):
            y = layer(idx)
            assert layer.backward(g) is None
        yt = theirs(torch.from_numpy(idx))
        yt.backward(torch.from_numpy(g))
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_allclose(layer.weight.grad, theirs.weight.grad.numpy(), rtol=1e-5,
                                   atol=1e-6)
    assert layer.state_dict().keys() == theirs.state_dict().keys()


def test_first_layer_of_a_model_matches_torch():
    torch = pytest.importorskip("torch")
    fl.manual_seed(1)
    model = fl.Sequential(fl.Embedding(20, 8, padding_idx=0), fl.LayerNorm(8), fl.Linear(8, 4))
    theirs = torch.nn.Sequential(torch.nn.Embedding(20, 8, padding_idx=0), torch.nn.LayerNorm(8),
                                 torch.nn.Linear(8, 4))
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 20, (3, 7))
    idx[0, :3] = 0
    g = rng.standard_normal((3, 7, 4)).astype(np.float32)
    y = model(idx)
    assert model.backward(g) is None            # the indices have no gradient
    yt = theirs(torch.from_numpy(idx))
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    for (name, p), (_, tp) in zip(model.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------- from_pretrained

def test_from_pretrained_shares_the_array_and_freezes():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    layer = fl.Embedding.from_pretrained(w, padding_idx=2)
    assert layer.weight.data is w                       # as PyTorch keeps the tensor
    assert layer.freeze and layer.weight.grad is None
    np.testing.assert_array_equal(layer.weight.data[2], [6, 7, 8])    # the pad is not zeroed
    np.testing.assert_array_equal(layer(np.array([2, 0])), [[6, 7, 8], [0, 1, 2]])
    assert layer.backward(np.ones((2, 3), np.float32)) is None
    assert layer.weight.grad is None                    # frozen: no gradient at all
    opt = fl.SGD(layer.parameters(), lr=1.0)
    opt.step()                                          # skips the frozen weight
    np.testing.assert_array_equal(w, np.arange(12).reshape(4, 3))
    layer.freeze = False                                # requires_grad = True, in PyTorch
    layer(np.array([1, 1]))
    layer.backward(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(layer.weight.grad[1], 2)


def test_from_pretrained_matches_torch():
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(5).standard_normal((6, 4))
    ours = fl.Embedding.from_pretrained(w, freeze=False, padding_idx=-2)
    theirs = torch.nn.Embedding.from_pretrained(torch.from_numpy(w.copy()), freeze=False,
                                                padding_idx=-2)
    assert ours.padding_idx == theirs.padding_idx == 4
    assert ours.weight.dtype == np.float64 and ours.weight.grad is not None
    idx = np.array([[4, 1, 1], [0, 4, 5]])
    g = np.random.default_rng(6).standard_normal((2, 3, 4))
    y = ours(idx)
    ours.backward(g)
    yt = theirs(torch.from_numpy(idx))
    yt.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)


# -------------------------------------------------------------------------------- module behaviour

def test_backward_uses_the_indices_checked_at_the_forward():
    layer = fl.Embedding(3, 2)
    idx = np.array([0, 1])
    layer(idx)
    idx[:] = 99                                 # out of range now: the backward must not see it
    layer.backward(np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(layer.weight.grad, [[1, 1], [1, 1], [0, 0]])


def test_weight_rebound_between_forward_and_backward_raises():
    layer = fl.Embedding(5, 2)
    layer(np.array([4]))
    layer.weight.data = np.zeros((2, 2), np.float32)
    with pytest.raises(RuntimeError, match="weight"):
        layer.backward(np.ones((1, 2), np.float32))
    assert layer.weight.grad is None


def test_dtype_and_empty_input():
    layer = fl.Embedding(4, 3).double()
    assert layer(np.array([1, 2], np.int32)).dtype == np.float64
    y = layer(np.empty((2, 0), np.int64))
    assert y.shape == (2, 0, 3)
    layer.zero_grad()
    layer.backward(np.empty((2, 0, 3)))
    np.testing.assert_array_equal(layer.weight.grad, 0)
    assert layer(np.array(3)).shape == (3,)      # a 0-d index gives one vector, as in PyTorch
