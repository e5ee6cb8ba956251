"""MaxPool2d and AvgPool2d: gradients, PyTorch parity, bad inputs, and a small CNN end to end."""
import numpy as np
import pytest

import fastlayers as fl
from fastlayers.conv import Conv2d
from fastlayers.gradcheck import gradcheck
from fastlayers.pooling import AvgPool2d, MaxPool2d


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
                                    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))])
def test_gradcheck_float64(cls, kwargs):
    # distinct values, well separated, so the max-pool argmax is stable under +-eps
    x = np.random.default_rng(0).permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) * 0.01
    assert gradcheck(cls(**kwargs), x).ok


@pytest.mark.parametrize("cls, fn", [(MaxPool2d, "max_pool2d"), (AvgPool2d, "avg_pool2d")])
def test_parity_with_torch(cls, fn):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for k, s, p in [(2, None, 0), (3, 1, 1), ((3, 2), (2, 1), (1, 1))]:
        x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
        layer = cls(k, s, p)
        tx = torch.tensor(x, requires_grad=True)
        ty = getattr(torch.nn.functional, fn)(tx, k, s, p)
        y = layer(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-6)
        g = rng.standard_normal(y.shape).astype(np.float32)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_stride_defaults_to_kernel_size_and_repr():
    assert MaxPool2d(3).stride == (3, 3)
    assert AvgPool2d((2, 3), stride=1).stride == (1, 1)
    assert repr(MaxPool2d(2)) == "MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))"


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_bad_arguments_and_inputs(cls):
    with pytest.raises(ValueError, match="kernel_size"):
        cls(0)
    with pytest.raises(ValueError, match="stride"):
        cls(2, stride=0)
    with pytest.raises(ValueError, match="padding"):
        cls(2, padding=-1)
    with pytest.raises(ValueError, match="at most half the kernel"):
        cls(3, padding=2)
    with pytest.raises(TypeError, match="kernel_size"):
        cls("2")
    layer = cls(3)
    with pytest.raises(ValueError, match="4-D"):
        layer(np.zeros((2, 6, 6), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer(np.zeros((1, 1, 6, 6), np.int32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer(np.zeros((1, 1, 2, 6), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 1, 2, 2), np.float32))
    layer(np.zeros((1, 1, 6, 6), np.float32))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        layer.backward(np.zeros((1, 1, 3, 2), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        layer.backward(np.zeros((1, 1, 2, 2), np.float64))


def _cnn():
    return fl.Sequential(Conv2d(1, 4, 3, padding=1), fl.ReLU(), MaxPool2d(2),
                         Conv2d(4, 6, 3, padding=1), fl.ReLU(), AvgPool2d(2),
                         fl.Flatten(), fl.Linear(6 * 3 * 3, 5))


def test_small_cnn_with_flatten_and_linear_matches_torch():
    torch = pytest.importorskip("torch")
    fl.manual_seed(0)
    model = _cnn()
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 6, 3, padding=1),
                                 torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(54, 5))
    tparams = dict(tmodel.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            tparams[name].copy_(torch.from_numpy(p.data))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 12, 12)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tmodel(tx)
    y = model(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(model.backward(g), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=1e-4, atol=1e-4,
                                   err_msg=name)


def test_small_cnn_gradcheck_float64():
    fl.manual_seed(1)
    model = _cnn().double()
    x = np.random.default_rng(2).standard_normal((2, 1, 12, 12))
    result = gradcheck(model, x)
    assert result.ok, result
