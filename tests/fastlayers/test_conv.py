"""Conv2d and SimpleConv: gradients, PyTorch parity, initialisation, bad inputs."""
import numpy as np
import pytest

import fastlayers as fl
from fastlayers.conv import Conv2d, SimpleConv
from fastlayers.fused import ConvBlock
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
    conv(x)
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
    with pytest.raises(ValueError, match="3-D or 4-D"):
        conv(np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError, match="2 channels.*unbatched"):
        conv(np.zeros((3, 5, 5), np.float32))
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


# ------------------------------------- Conv2d + BatchNorm2d + ReLU + MaxPool2d(2), a first layer, fused

def _first_block(c=2, o=5, dtype=np.float32, act=None, **conv_kwargs):
    from fastlayers.pooling import MaxPool2d
    fl.manual_seed(3)
    conv = Conv2d(c, o, conv_kwargs.pop("kernel_size", 3), dtype=dtype,
                  **(conv_kwargs or dict(padding=1)))
    bn = fl.BatchNorm2d(o, dtype=dtype)
    rng = np.random.default_rng(4)
    bn.weight.data[:] = rng.uniform(0.5, 2, o) * rng.choice([-1, 1], o)
    bn.bias.data[:] = rng.standard_normal(o)
    model = fl.Sequential(conv, bn, act or fl.ReLU(), MaxPool2d(2))
    conv.needs_input_grad = False
    return model


def test_first_block_is_fused_only_when_it_can_be():
    x = np.random.default_rng(5).standard_normal((4, 2, 8, 8)).astype(np.float32)
    model = _first_block()
    assert model(x).shape == (4, 5, 4, 4) and model.steps == [tuple(model)]
    model.eval()
    model(x)
    # eval: the convolution, the batch norm with its activation, the pool
    assert model.steps == [(model[0],), (model[1], model[2]), (model[3],)]
    model.train()
    model[0].needs_input_grad = True                            # its input wants a gradient
    model(x)
    assert model.steps == [(model[0],), (model[1], model[2], model[3])]
    strided = _first_block(stride=2, padding=1)
    strided(x)
    assert len(strided.steps) == 2


@pytest.mark.parametrize("act", ["relu", "leaky"])
@pytest.mark.parametrize("conv_kwargs", [dict(padding=1), dict(kernel_size=(2, 3), dilation=(2, 1))])
def test_fused_first_block_equals_the_layers_one_by_one(act, conv_kwargs, monkeypatch):
    # float64, several training steps with plain SGD: the fused step against the unfused layers
    # (each of them gradient-checked and PyTorch-checked on its own).
    x = np.random.default_rng(6).standard_normal((3, 2, 9, 7)) * 2 + 1
    runs = []
    for fused in (True, False):
        model = _first_block(dtype=np.float64, act=fl.LeakyReLU(0.2) if act == "leaky" else None,
                             **dict(conv_kwargs))
        if not fused:
            monkeypatch.setattr(ConvBlock, "applies", staticmethod(lambda *parts: False))
        opt = fl.SGD(model.parameters(), lr=0.1)
        outs = []
        for step in range(3):
            y = model(x)
            steps = len(model.steps)
            opt.zero_grad()
            assert model.backward(np.sin(y + step)) is None
            outs += [y] + [p.grad.copy() for p in model.parameters()]
            opt.step()
        outs += [model[1].running_mean, model[1].running_var, model[1].num_batches_tracked]
        runs.append((steps, outs))
    assert runs[0][0] == 1 and runs[1][0] == 2      # unfused: Conv2d, then BatchNorm2d's own fusion
    for a, e in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-9)


def test_fused_first_block_matches_torch():
    torch = pytest.importorskip("torch")
    model = _first_block(c=3, o=6)
    conv, bn = model[0], model[1]
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6),
                                 torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    with torch.no_grad():
        for t, p in ((tmodel[0].weight, conv.weight), (tmodel[0].bias, conv.bias),
                     (tmodel[1].weight, bn.weight), (tmodel[1].bias, bn.bias)):
            t.copy_(torch.from_numpy(p.data))
    rng = np.random.default_rng(7)
    for _ in range(2):
        x = (rng.random((8, 3, 10, 10)) * 3).astype(np.float32)
        y = model(x)
        assert model.steps == [tuple(model)]
        ty = tmodel(torch.from_numpy(x))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
        g = rng.standard_normal(y.shape).astype(np.float32)
        model.zero_grad()
        tmodel.zero_grad()
        model.backward(g)
        ty.backward(torch.from_numpy(g))
        for p, t in ((conv.weight, tmodel[0].weight), (conv.bias, tmodel[0].bias),
                     (bn.weight, tmodel[1].weight), (bn.bias, tmodel[1].bias)):
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(bn.running_mean, tmodel[1].running_mean.numpy(), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(bn.running_var, tmodel[1].running_var.numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_fused_first_block_bad_input_leaves_state_untouched():
    model = _first_block()
    before = {k: np.copy(v) for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="channels"):
        model(np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        model(np.zeros((4, 2, 1, 8), np.float32))              # a 1-row output: no 2x2 window
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    y = model(np.ones((2, 2, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 5, 3, 3\)"):
        model.backward(np.ones((2, 5, 6, 6), np.float32))
    assert y.shape == (2, 5, 3, 3)
