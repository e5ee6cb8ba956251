"""GELU, SiLU, Hardtanh, ReLU6, ELU and Softplus as PyTorch's modules (skipped without torch): the
forward and input gradient on Hypothesis shapes, both backends; NaN, inf and boundaries; float64
gradient checks; Linear + activation fused in a Sequential against torch's two layers (input,
weight and bias gradients), on N-D input too; and the batch norms, which must not fuse them."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlayers as fl
from fastlayers.gradcheck import gradcheck
from kernels.batchnorm import FUSED_ACTS
from tests.fastlayers.test_torch_parity import TORCH_DTYPE, T, rnd, tol

torch = pytest.importorskip("torch")
nn = torch.nn
# name: (ours, theirs) constructors with the same arguments
MODULES = {
    "GELU": (fl.GELU, nn.GELU),
    "GELU-tanh": (lambda: fl.GELU(approximate="tanh"), lambda: nn.GELU(approximate="tanh")),
    "SiLU": (fl.SiLU, nn.SiLU),
    "Hardtanh": (fl.Hardtanh, nn.Hardtanh),
    "Hardtanh(-0.5,2)": (lambda: fl.Hardtanh(-0.5, 2.0), lambda: nn.Hardtanh(-0.5, 2.0)),
    "ReLU6": (fl.ReLU6, nn.ReLU6),
    "ELU": (fl.ELU, nn.ELU),
    "ELU(0.3)": (lambda: fl.ELU(alpha=0.3), lambda: nn.ELU(alpha=0.3)),
    "Softplus": (fl.Softplus, nn.Softplus),
    "Softplus(2,3)": (lambda: fl.Softplus(beta=2.0, threshold=3.0),
                      lambda: nn.Softplus(beta=2.0, threshold=3.0)),
}
NAMES = list(MODULES)




def torch_linear(lin, dtype):
    t = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None,
                  dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        t.weight.copy_(T(lin.weight.data))
        if lin.bias is not None:
            t.bias.copy_(T(lin.bias.data))
    return t


def grad_tol(name, dtype):
    """The input gradient's tolerance. tanh-GELU's float32 gradient keeps few bits where tanh is
    near -1 (1 + tanh cancels): torch's and ours are each up to 1e-6 from the float64 value for
    x in [-9, -5], per unit of upstream gradient, the same formula rounded differently."""
    if name == "GELU-tanh" and dtype == np.float32:
        return dict(rtol=1e-5, atol=6e-6)
    return tol(dtype)


def compare(ours, theirs, x, dtype, dx_tol=None):
    """Forward and input gradient of ``ours`` against the torch module ``theirs`` for a random
    upstream gradient; returns (dx, torch's input tensor) for further checks."""
    tolerance = tol(dtype)
    y = ours(x)
    xt = T(x, grad=True)
    yt = theirs(xt)
    assert y.dtype == x.dtype and y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tolerance)
    g = rnd(y.shape, dtype, 99)
    dx = ours.backward(g)
    yt.backward(T(g))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **(dx_tol or tolerance))
    return dx, xt


shapes = st.one_of(st.tuples(st.integers(1, 50)),
                   st.tuples(st.integers(1, 7), st.integers(1, 40)),
                   st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9),
                             st.integers(1, 5)))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=12)
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([0.5, 3.0]), seed=st.integers(0, 2 ** 16), train=st.booleans())
def test_matches_torch(backend_name, name, shape, dtype, scale, seed, train):
    ours, theirs = MODULES[name][0](), MODULES[name][1]()
    ours.train(train)
    theirs.train(train)
    compare(ours, theirs, rnd(shape, dtype, seed, scale), dtype, grad_tol(name, dtype))


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_agree(name):
    m = MODULES[name][0]()
    x = rnd((6, 7), np.float32, 3, 2.0)
    g = rnd(x.shape, np.float32, 4)
    y_train, dx_train = m(x), m.backward(g)
    m.eval()
    assert not m.training
    np.testing.assert_array_equal(m(x), y_train)
    np.testing.assert_array_equal(m.backward(g), dx_train)


# Values where the functions change form, or where floating point gives up.
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1.0, 6.0, -0.5, 2.0, 3.0, 1.5, 20.0,
           np.nextafter(20.0, 21.0), -20.0, 1e4, -1e4, -100.0, 100.0, 1e-30, -1e-30]


def _torch_quirk(name, dtype, x):
    """Where torch's float32 AVX-512 GELU departs from its own formula (NaN at +inf, inf above
    about 1.7e38; kernels/activations.py follows the formula, as torch's float64 does)."""
    return (x == np.inf) & (name == "GELU" and dtype == np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_nan_inf_boundaries_and_signed_zeros(backend_name, name, dtype):
    """A vector long enough for torch's vectorised loop (its scalar tail differs at NaN for
    Hardtanh and ELU's gradients): values, NaN and inf positions and signs of zero as torch."""
    x = np.array(SPECIAL * 4, dtype)
    g = np.linspace(0.5, 2.0, x.size).astype(dtype)
    ours, theirs = MODULES[name][0](), MODULES[name][1]()
    y = ours(x)
    dx = ours.backward(g)
    xt = T(x, grad=True)
    yt = theirs(xt)
    yt.backward(T(g))
    ty, tdx = yt.detach().numpy(), xt.grad.numpy()
    keep = ~_torch_quirk(name, dtype, x)
    # (atol: results in the subnormal range, e.g. softplus(-100) = e^-100 in float32, may round
    # differently by a unit or two of the smallest subnormal)
    exact = dict(rtol=1e-5, atol=4 * np.finfo(dtype).smallest_subnormal)
    np.testing.assert_allclose(y[keep], ty[keep], **exact)
    np.testing.assert_array_equal(np.signbit(y[keep & ~np.isnan(y)]),
                                  np.signbit(ty[keep & ~np.isnan(y)]))
    np.testing.assert_allclose(dx[keep], tdx[keep], **exact)
    if not keep.all():
        assert np.all(y[~keep] == np.inf)


@pytest.mark.parametrize("name", ["Hardtanh(-0.5,2)", "ReLU6"])
def test_hardtanh_gradient_is_zero_on_the_boundaries(backend_name, name):
    ours = MODULES[name][0]()
    x = np.array([ours.min_val, ours.max_val, np.nextafter(ours.min_val, 9),
                  np.nextafter(ours.max_val, -9)])
    np.testing.assert_array_equal(ours(x), x)
    np.testing.assert_array_equal(ours.backward(np.ones(4)), [0, 0, 1, 1])


def _away_from_kinks(shape, seed, kinks, gap=0.05):
    x = np.random.default_rng(seed).standard_normal(shape) * 2
    for k in kinks:
        near = np.abs(x - k) < gap
        x[near] = k + np.where(x[near] >= k, gap, -gap) * 2
    return x


KINKS = {"Hardtanh": (-1, 1), "Hardtanh(-0.5,2)": (-0.5, 2), "ReLU6": (0, 6), "ELU(0.3)": (0,),
         "Softplus(2,3)": (1.5,)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(7,), (3, 4, 2)])
def test_gradcheck(backend_name, name, shape):
    m = MODULES[name][0]()
    res = gradcheck(m, _away_from_kinks(shape, 5, KINKS.get(name, ())))
    assert res.ok and res.max_rel_error <= 1e-5, res


# ------------------------------------------------------------------------------ fused in Linear

def _linear_act(name, dtype, din=5, dout=6, bias=True):
    fl.manual_seed(1)
    lin = fl.Linear(din, dout, bias=bias).to(dtype)
    act = MODULES[name][0]()
    return fl.Sequential(lin, act), nn.Sequential(torch_linear(lin, dtype), MODULES[name][1]())


def _compare_sequential(ours, theirs, x, dtype):
    ours.zero_grad()
    compare(ours, theirs, x, dtype)
    for (n, p), (tn, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert n == tn
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **tol(dtype), err_msg=n)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10)
@given(lead=st.sampled_from([(8,), (1,), (), (2, 3), (2, 1, 3)]),
       dtype=st.sampled_from([np.float32, np.float64]), bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_fused_linear_activation_matches_torch(backend_name, name, lead, dtype, bias, seed):
    ours, theirs = _linear_act(name, dtype, bias=bias)
    _compare_sequential(ours, theirs, rnd(lead + (5,), dtype, seed, 1.5), dtype)
    assert ours.steps == [tuple(ours)]                 # one fused step: Linear and activation


@pytest.mark.parametrize("name", NAMES)
def test_fused_equals_unfused(backend_name, name):
    ours, _ = _linear_act(name, np.float64)
    lin, act = ours
    x = rnd((4, 3, 5), np.float64, 2, 1.5)
    g = rnd((4, 3, 6), np.float64, 3)
    y = ours(x)
    assert ours.steps == [(lin, act)]
    dx = ours.backward(g)
    grads = [p.grad.copy() for p in lin.parameters()]
    lin.zero_grad()
    y2 = act(lin(x))
    dx2 = lin.backward(act.backward(g))
    np.testing.assert_allclose(y, y2, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, dx2, rtol=1e-12, atol=1e-15)
    for a, p in zip(grads, lin.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["GELU", "SiLU", "Softplus(2,3)", "ReLU6"])
def test_gradcheck_fused(backend_name, name):
    ours, _ = _linear_act(name, np.float64, 4, 3)
    x = rnd((5, 4), np.float64, 7)
    pre = x @ ours[0].weight.data.T + ours[0].bias.data
    assert np.abs(pre[..., None] - np.array(KINKS.get(name, (99,)))).min() > 1e-3
    res = gradcheck(ours, x)
    assert res.ok and res.max_rel_error <= 1e-5, res


def test_transformer_style_block_on_n_t_d(backend_name):
    """Linear -> GELU -> Linear on (N, T, D), as an MLP block of a transformer, against torch."""
    fl.manual_seed(3)
    n, t, d = 2, 5, 8
    ours = fl.Sequential(fl.Linear(d, 4 * d), fl.GELU(), fl.Linear(4 * d, d))
    theirs = nn.Sequential(torch_linear(ours[0], np.float32), nn.GELU(),
                           torch_linear(ours[2], np.float32))
    x = rnd((n, t, d), np.float32, 11)
    _compare_sequential(ours, theirs, x, np.float32)
    assert ours(x).shape == (n, t, d)
    assert ours.steps == [(ours[0], ours[1]), (ours[2],)]


# -------------------------------------------------------------------------- N-D Linear (*, in)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (1, 5), (3, 5), (2, 3, 5), (2, 1, 4, 5), (0, 5),
                                   (2, 0, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_any_leading_shape_matches_torch(backend_name, dtype, shape, bias):
    fl.manual_seed(0)
    lin = fl.Linear(5, 4, bias=bias).to(dtype)
    theirs = torch_linear(lin, dtype)
    x = rnd(shape, dtype, 8)
    y = lin(x)
    assert y.shape == shape[:-1] + (4,)
    xt = T(x, grad=True)
    yt = theirs(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol(dtype))
    g = rnd(y.shape, dtype, 9)
    dx = lin.backward(g)
    yt.backward(T(g))
    assert dx.shape == shape
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))
    np.testing.assert_allclose(lin.weight.grad, theirs.weight.grad.numpy(), **tol(dtype))
    if bias:
        np.testing.assert_allclose(lin.bias.grad, theirs.bias.grad.numpy(), **tol(dtype))


def test_linear_n_d_input_that_is_not_contiguous(backend_name):
    fl.manual_seed(0)
    lin = fl.Linear(3, 2).double()
    x = np.random.default_rng(1).standard_normal((4, 3, 6)).transpose(0, 2, 1)   # (4, 6, 3)
    y = lin(x)
    np.testing.assert_allclose(y, x @ lin.weight.data.T + lin.bias.data, rtol=1e-13)
    dx = lin.backward(np.ones(y.shape))
    np.testing.assert_allclose(dx, np.ones(y.shape) @ lin.weight.data, rtol=1e-13)


# ------------------------------------------------------------------- not fused into batch norm

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["BatchNorm1d", "BatchNorm2d"])
def test_batch_norm_does_not_fuse_them(backend_name, name, norm):
    act = MODULES[name][0]()
    assert act.act not in FUSED_ACTS
    shape = (6, 3) if norm == "BatchNorm1d" else (4, 3, 2, 2)
    bn = getattr(fl, norm)(3)
    bn.weight.data[...] = [1.5, -0.7, 0.9]
    bn.bias.data[...] = [0.2, -0.1, 0.4]
    model = fl.Sequential(bn, act)
    theirs = nn.Sequential(getattr(nn, norm)(3), MODULES[name][1]())
    with torch.no_grad():
        theirs[0].weight.copy_(T(bn.weight.data))
        theirs[0].bias.copy_(T(bn.bias.data))
    x = rnd(shape, np.float32, 4, 2.0)
    _compare_sequential(model, theirs, x, np.float32)
    assert model.steps == [(bn,), (act,)]
    if norm == "BatchNorm2d":                          # nor into batch norm + max pool
        bn, act, pool = fl.BatchNorm2d(3), MODULES[name][0](), fl.MaxPool2d(2)
        model = fl.Sequential(bn, act, pool)
        model(x)
        assert model.steps == [(bn,), (act,), (pool,)]


# -------------------------------------------------------------------------- the modules themselves

def test_reprs_attributes_and_state_as_torch():
    for name, (ours, theirs) in MODULES.items():
        a, b = ours(), theirs()
        assert type(a).__name__ == type(b).__name__
        assert a.state_dict() == {} and not list(a.parameters())
        assert repr(a) == repr(b), name
    assert isinstance(fl.ReLU6(), fl.Hardtanh)
    assert (fl.ReLU6().min_val, fl.ReLU6().max_val) == (0.0, 6.0)
    assert fl.GELU().approximate == "none" and fl.Softplus().beta == 1.0
    assert fl.Softplus().threshold == 20.0 and fl.ELU().alpha == 1.0


def test_backward_uses_the_constants_of_its_forward(backend_name):
    m = fl.ELU(alpha=2.0)
    x = np.array([-1.0, 1.0])
    y = m(x)
    m.alpha = 5.0
    np.testing.assert_allclose(y, [2.0 * np.expm1(-1.0), 1.0])
    np.testing.assert_allclose(m.backward(np.ones(2)), [2.0 * np.exp(-1.0), 1.0])
