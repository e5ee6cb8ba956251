"""Conv2d's groups (depthwise among them), padding='same'/'valid', bias=False and unbatched inputs:
gradients, PyTorch parity of the module (forward and every gradient), initialisation, repr,
state dicts, and the fused first block, which must leave these convolutions alone."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastlayers as fl
from fastlayers.conv import Conv2d
from fastlayers.fused import ConvBlock
from fastlayers.gradcheck import gradcheck


def _rel_err(a, e):
    """max |a - e| over max |e|: float32 sums of many products differ from PyTorch's elementwise
    by more than their rounding wherever they cancel to near zero."""
    return np.abs(a - e).max() / max(np.abs(e).max(), 1e-30)


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
    dict(in_channels=3, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
         groups=3),                                                       # depthwise, x2
    dict(in_channels=2, out_channels=2, kernel_size=(2, 4), padding="same", dilation=(1, 2),
         groups=2, bias=False),                                           # odd totals
    dict(in_channels=4, out_channels=2, kernel_size=3, padding="valid", groups=2),
])
def test_gradcheck_float64(kwargs):
    fl.manual_seed(0)
    conv = Conv2d(dtype=np.float64, **kwargs)
    x = np.random.default_rng(1).standard_normal((2, kwargs["in_channels"], 5, 6))
    result = gradcheck(conv, x)
    assert result.ok, result
    result = gradcheck(conv, x[0])                                        # unbatched
    assert result.ok, result


@st.composite
def module_cases(draw):
    g = draw(st.integers(1, 4))
    cg = draw(st.sampled_from([1, 1, 2, 3]))                             # depthwise often
    og = draw(st.integers(1, 3))
    k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    d = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["same", "valid", "int", "pair"]))
    s = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if padding == "int":
        padding = draw(st.integers(0, 2))
    elif padding == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(d[0] * (k[0] - 1) + 1, 10))     # fits even unpadded
    w = draw(st.integers(d[1] * (k[1] - 1) + 1, 10))
    return dict(args=(g * cg, g * og, k), kwargs=dict(stride=s, padding=padding, dilation=d,
                                                      groups=g, bias=draw(st.booleans())),
                n=draw(st.integers(1, 3)), h=h, w=w, unbatched=draw(st.booleans()),
                train=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


def _torch_twin(conv, torch):
    t = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                        conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None)
    t = t.to(torch.float64 if conv.weight.dtype == np.float64 else torch.float32)
    t.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in conv.state_dict().items()})
    return t


@settings(max_examples=25, deadline=None)
@given(case=module_cases())
def test_parity_with_torch_float32(case):
    # forward, input, weight and bias gradients: float32 relative error below 1e-5
    torch = pytest.importorskip("torch")
    fl.manual_seed(case["seed"] % 1000)
    conv = Conv2d(*case["args"], **case["kwargs"])
    tconv = _torch_twin(conv, torch)
    conv.train(case["train"])
    tconv.train(case["train"])
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["args"][0], case["h"], case["w"])
    x = rng.standard_normal(shape[1:] if case["unbatched"] else shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ty = tconv(tx)
    y = conv(x)
    assert y.shape == tuple(ty.shape) and y.dtype == np.float32
    assert _rel_err(y, ty.detach().numpy()) < 1e-5
    g = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    dx = conv.backward(g)
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert _rel_err(dx, tx.grad.numpy()) < 1e-5
    assert _rel_err(conv.weight.grad, tconv.weight.grad.numpy()) < 1e-5
    if conv.bias is not None:
        assert _rel_err(conv.bias.grad, tconv.bias.grad.numpy()) < 1e-5


@pytest.mark.parametrize("k, d", [((2, 4), (1, 1)), ((3, 4), (2, 1)), ((4, 1), (1, 3)),
                                  ((1, 1), (1, 1))])
def test_same_padding_puts_the_odd_zero_bottom_right(k, d):
    torch = pytest.importorskip("torch")
    conv = Conv2d(2, 3, k, padding="same", dilation=d, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 6))
    y = conv(x)
    assert y.shape == (2, 3, 7, 6)
    top, left = (d[0] * (k[0] - 1)) // 2, (d[1] * (k[1] - 1)) // 2
    bottom, right = d[0] * (k[0] - 1) - top, d[1] * (k[1] - 1) - left
    assert conv._sides == (top, bottom, left, right)
    t = torch.nn.functional
    xp = t.pad(torch.from_numpy(x), (left, right, top, bottom))
    ref = t.conv2d(xp, torch.from_numpy(conv.weight.data), torch.from_numpy(conv.bias.data),
                   dilation=d)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():          # PyTorch warns that it copies the input padded
        warnings.simplefilter("ignore", UserWarning)
        same = _torch_twin(conv, torch)(torch.from_numpy(x))
    np.testing.assert_allclose(y, same.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_initialisation_shapes_repr_and_state_dict_follow_torch():
    torch = pytest.importorskip("torch")
    fl.manual_seed(0)
    conv = Conv2d(8, 16, 3, padding="same", groups=4)
    bound = 1 / np.sqrt(8 / 4 * 9)                          # fan_in = C / groups * kh * kw
    assert conv.weight.shape == (16, 2, 3, 3) and conv.bias.shape == (16,)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound
    for args, kwargs in [((8, 16, 3), dict(padding="same", groups=4)),
                         ((4, 4, 3), dict(padding="valid", groups=4, bias=False)),
                         ((4, 8, (3, 1)), dict(stride=2, padding=(1, 0), dilation=2, groups=2)),
                         ((2, 2, 1), dict())]:
        ours, theirs = Conv2d(*args, **kwargs), torch.nn.Conv2d(*args, **kwargs)
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
            {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
        np.testing.assert_array_equal(ours.weight.data, theirs.weight.detach().numpy())
    assert Conv2d(4, 4, 3, groups=4).padding == (0, 0)
    assert Conv2d(4, 4, 3, padding="valid").padding == "valid"
    assert Conv2d(4, 4, 3, padding_mode="zeros").padding_mode == "zeros"


@pytest.mark.parametrize("kwargs", [dict(groups=4), dict(groups=2, stride=2),
                                    dict(padding="same", groups=1)])
def test_numpy_backend_gives_the_same_results(kwargs):
    fl.manual_seed(0)
    conv = Conv2d(4, 8, 3, dtype=np.float64, **{"padding": 1, **kwargs})
    x = np.random.default_rng(0).standard_normal((3, 4, 7, 7))
    y = conv(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    dx, dw, db = conv.backward(g), conv.weight.grad.copy(), conv.bias.grad.copy()
    conv.zero_grad()
    with fl.use_backend("numpy"):
        y0, dx0 = conv(x), conv.backward(g)
    for a, e in ((y, y0), (dx, dx0), (dw, conv.weight.grad), (db, conv.bias.grad)):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_gradients_accumulate_and_needs_input_grad_false():
    conv = Conv2d(3, 3, 3, padding=1, groups=3)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    g = np.ones((2, 3, 5, 5), np.float32)
    conv(x)
    conv.backward(g)
    once = conv.weight.grad.copy()
    conv(x)
    conv.backward(g)
    np.testing.assert_allclose(conv.weight.grad, 2 * once, rtol=1e-6)
    conv.needs_input_grad = False
    conv(x[0])
    assert conv.backward(g[0]) is None
    np.testing.assert_allclose(conv.bias.grad, 2 * 2 * 25 + 25)


def _block(conv):
    fl.manual_seed(3)
    model = fl.Sequential(conv, fl.BatchNorm2d(conv.out_channels), fl.ReLU(), fl.MaxPool2d(2))
    conv.needs_input_grad = False
    return model


@pytest.mark.parametrize("conv_kwargs", [dict(padding=1, groups=2), dict(padding="same"),
                                         dict(padding="valid"), dict(padding=1, groups=1)])
def test_fused_first_block_only_for_one_group_and_numeric_padding(conv_kwargs, monkeypatch):
    x = np.random.default_rng(5).standard_normal((4, 2, 8, 8))
    fl.manual_seed(1)
    model = _block(Conv2d(2, 4, 3, dtype=np.float64, **conv_kwargs))
    model.double()
    fused = conv_kwargs.get("groups") == 1
    y = model(x)
    assert (model.steps == [tuple(model)]) == fused
    grads = model.backward(np.sin(y)), [p.grad.copy() for p in model.parameters()]
    # the same block, never fused: the same results
    model.zero_grad()
    monkeypatch.setattr(ConvBlock, "applies", staticmethod(lambda *parts: False))
    model.train()
    y0 = model(x)
    np.testing.assert_allclose(y0, y, rtol=1e-9, atol=1e-9)
    assert model.backward(np.sin(y0)) is None and grads[0] is None
    for p, e in zip(model.parameters(), grads[1]):
        np.testing.assert_allclose(p.grad, e, rtol=1e-9, atol=1e-9)
