"""Conv2d and SimpleConv: gradients, PyTorch parity, initialisation, bad inputs."""
import numpy as np
import pytest

import fastlayers as fl
from fastlayers.conv import Conv2d, SimpleConv
from fastlayers.gradcheck import gradcheck


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=1, bias=False),
])
def test_gradcheck_float64(kwargs):
    fl.manual_seed(0)
    conv = Conv2d(2, 3, dtype=np.float64, **kwargs)
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 6))
    result = gradcheck(conv, x)
    assert result.ok, result


def test_parity_with_torch_module():
    torch = pytest.importorskip("torch")
    fl.manual_seed(0)
    conv = Conv2d(3, 5, (3, 2), stride=(1, 2), padding=1, dilation=(2, 1))
    tconv = torch.nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=1, dilation=(2, 1))
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(conv.weight.data))
        tconv.bias.copy_(torch.from_numpy(conv.bias.data))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 10, 9)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tconv(tx)
    y = conv(x)
    assert y.shape == tuple(ty.shape) and y.dtype == np.float32
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    dx = conv.backward(g)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.weight.grad, tconv.weight.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(conv.bias.grad, tconv.bias.grad.numpy(), rtol=1e-4, atol=1e-3)
    conv.backward(g)                                   # gradients accumulate, as in PyTorch
    np.testing.assert_allclose(conv.bias.grad, 2 * tconv.bias.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_numpy_backend_gives_the_same_results():
    fl.manual_seed(0)
    conv = Conv2d(2, 4, 3, padding=1, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 2, 7, 7))
    g = np.random.default_rng(1).standard_normal((3, 4, 7, 7))
    y, dx = conv(x), conv.backward(g)
    dw = conv.weight.grad.copy()
    conv.zero_grad()
    with fl.use_backend("numpy"):
        y0, dx0 = conv(x), conv.backward(g)
    for a, e in ((y, y0), (dx, dx0), (dw, conv.weight.grad)):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_default_initialisation_and_repr():
    fl.manual_seed(0)
    conv = Conv2d(16, 32, 3, padding=1)
    bound = 1 / np.sqrt(16 * 9)
    assert conv.weight.shape == (32, 16, 3, 3) and conv.bias.shape == (32,)
    assert conv.weight.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound
    assert repr(conv) == "Conv2d(16, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert Conv2d(1, 1, 2, bias=False).bias is None


def test_needs_input_grad_false_skips_the_input_gradient():
    conv = Conv2d(1, 2, 3)
    conv.needs_input_grad = False
    y = conv(np.ones((2, 1, 5, 5), np.float32))
    assert conv.backward(np.ones_like(y)) is None
    assert np.all(conv.bias.grad == 2 * 9)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=(3, -1)), ValueError, "kernel_size"),
    (dict(kernel_size=(3, 3, 3)), ValueError, "kernel_size"),
    (dict(kernel_size=2.5), TypeError, "kernel_size"),
    (dict(kernel_size=3, stride=0), ValueError, "stride"),
    (dict(kernel_size=3, padding=-1), ValueError, "padding"),
    (dict(kernel_size=3, dilation=0), ValueError, "dilation"),
    (dict(kernel_size=3, bias=1), TypeError, "bias"),
    (dict(kernel_size=3, dtype=np.int32), TypeError, "dtype"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Conv2d(2, 3, **kwargs)
    with pytest.raises(ValueError, match="in_channels"):
        Conv2d(0, 3, 3)


def test_bad_inputs_raise_before_any_kernel_runs():
    conv = Conv2d(2, 3, 3, padding=1)
    before = conv.state_dict()
    with pytest.raises(ValueError, match="2 channels"):
        conv(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        conv(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        conv(np.zeros((1, 2, 5, 5), np.int64))
    with pytest.raises(TypeError, match="dtype"):
        conv(np.zeros((1, 2, 5, 5), np.float64))
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2d(2, 3, 5, dilation=2)(np.zeros((1, 2, 6, 9), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        conv.backward(np.zeros((1, 3, 5, 5), np.float32))
    y = conv(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        conv.backward(np.zeros((1, 3, 4, 5), np.float32))
    state = conv.state_dict()
    for k in before:
        np.testing.assert_array_equal(state[k], before[k])
    assert not conv.weight.grad.any()
    assert y.shape == (1, 3, 5, 5)


def test_simple_conv_wraps_conv2d():
    torch = pytest.importorskip("torch")
    fl.manual_seed(0)
    sc = SimpleConv(3, dtype=np.float64)
    assert sc.kernel.shape == (3, 3) and sc.bias.shape == (1,)
    rng = np.random.default_rng(0)
    for shape in [(6, 7), (4, 6, 7)]:
        x = rng.standard_normal(shape)
        y = sc(x)
        batch = torch.from_numpy(x.reshape((-1, 1) + shape[-2:]))
        ref = torch.nn.functional.conv2d(batch, torch.from_numpy(sc.kernel[None, None].copy()),
                                         torch.from_numpy(sc.bias.data)).numpy()
        assert y.shape == shape[:-2] + (shape[-2] - 2, shape[-1] - 2)
        np.testing.assert_allclose(y, ref.reshape(y.shape), rtol=1e-12)
        assert gradcheck(sc, x).ok
    with pytest.raises(ValueError, match="2-D or 3-D"):
        sc(np.zeros((1, 1, 5, 5)))
