"""Layers: float64 finite-difference gradient checks on both backends, and
non-contiguous inputs giving the same results as contiguous ones."""
import numpy as np
import pytest

import fastlayers as fl
from fastlayers.gradcheck import gradcheck

ACTIVATIONS = {
    "ReLU": fl.ReLU,
    "LeakyReLU": lambda: fl.LeakyReLU(0.15),
    "Sigmoid": fl.Sigmoid,
    "Tanh": fl.Tanh,
}


def away_from_zero(shape, seed, gap=0.05):
    """Random float64 values with |x| >= gap (finite differences stay off the ReLU kink)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < gap, np.sign(x + 1e-300) * (gap + np.abs(x)), x)


def check(module, *inputs, **kw):
    res = gradcheck(module, *inputs, **kw)
    assert res.ok, res
    assert res.max_rel_error <= 1e-5
    return res


# ---------------------------------------------------------------------------------------- gradcheck

@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2)])
def test_gradcheck_elementwise(backend_name, act, shape):
    check(ACTIVATIONS[act](), away_from_zero(shape, 2))


@pytest.mark.parametrize("cls", [fl.Softmax, fl.LogSoftmax])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gradcheck_softmax_3d(backend_name, cls, dim):
    x = np.random.default_rng(3).standard_normal((3, 2, 4)) * 2
    check(cls(dim=dim), x)


@pytest.mark.parametrize("cls", [fl.Softmax, fl.LogSoftmax])
def test_softmax_dim_semantics(backend_name, cls):
    x = np.random.default_rng(4).standard_normal((3, 2, 4))
    for dim in (0, 1, 2, -1, -2):
        y = cls(dim=dim)(x)
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        sm = e / e.sum(axis=dim, keepdims=True)
        np.testing.assert_allclose(y, sm if cls is fl.Softmax else np.log(sm), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("start,end,shape_out", [(1, -1, (2, 12)), (0, 1, (6, 4)), (0, -1, (24,)),
                                                 (2, 2, (2, 3, 4))])
def test_gradcheck_flatten(backend_name, start, end, shape_out):
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    f = fl.Flatten(start, end)
    assert f(x).shape == shape_out
    check(f, x)
    assert f.backward(np.ones(shape_out)).shape == x.shape


def test_gradcheck_identity(backend_name):
    x = np.random.default_rng(6).standard_normal((2, 3))
    ident = fl.Identity()
    assert ident(x) is x
    check(ident, x)


def test_gradcheck_mlp(backend_name):
    fl.manual_seed(7)
    model = fl.Sequential(fl.Flatten(), fl.Linear(6, 5), fl.Tanh(), fl.Linear(5, 4), fl.Sigmoid(),
                          fl.Linear(4, 3), fl.LogSoftmax()).double()
    check(model, np.random.default_rng(7).standard_normal((3, 2, 3)))


class WrongSquare(fl.Module):
    """y = x^2 with a deliberately wrong backward (forgets the factor 2)."""

    def forward(self, x):
        self._x = x
        return x * x

    def backward(self, grad_output):
        return grad_output * self._x


class WrongScale(fl.Module):
    """y = w * x with a wrong parameter gradient (sign flipped) but a correct input gradient."""

    def __init__(self):
        super().__init__()
        self.w = fl.Parameter(np.array([1.5, -0.5]))

    def forward(self, x):
        self._x = x
        return self.w.data * x

    def backward(self, grad_output):
        self.w.grad += -(grad_output * self._x).sum(axis=0)
        return grad_output * self.w.data


class RightScale(WrongScale):
    def backward(self, grad_output):
        self.w.grad += (grad_output * self._x).sum(axis=0)
        return grad_output * self.w.data


def test_gradcheck_catches_a_wrong_input_gradient():
    res = gradcheck(WrongSquare(), np.random.default_rng(0).standard_normal((3, 2)) + 3)
    assert res.ok is False and not res
    assert res.max_rel_error > 0.1
    assert res.where.startswith("input")


def test_gradcheck_catches_a_wrong_parameter_gradient():
    x = np.random.default_rng(1).standard_normal((4, 2))
    res = gradcheck(WrongScale(), x)
    assert res.ok is False
    assert res.where.startswith("w")
    assert gradcheck(RightScale(), x).ok


def test_gradcheck_restores_parameters_and_rejects_float32():
    fl.manual_seed(0)
    lin = fl.Linear(3, 2).double()
    before = lin.state_dict()
    gradcheck(lin, np.ones((2, 3)))
    for k, v in lin.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match="float64"):
        gradcheck(fl.Linear(3, 2), np.ones((2, 3)))
    with pytest.raises(TypeError, match="float64"):
        gradcheck(fl.ReLU(), np.ones((2, 3), np.float32))


# ---------------------------------------------------------------------------------------- layouts

def _layouts(x):
    """Non-contiguous views holding the same values as ``x`` (2-D): transposed, strided, F-order."""
    views = {}
    big = np.zeros((x.shape[0] * 2, x.shape[1] * 3), x.dtype)
    big[::2, ::3] = x
    views["strided"] = big[::2, ::3]
    t = np.ascontiguousarray(x.T)
    views["transposed"] = t.T
    views["fortran"] = np.asfortranarray(x)
    rev = np.ascontiguousarray(x[::-1])
    views["reversed"] = rev[::-1]
    for v in views.values():
        assert not v.flags.c_contiguous
        np.testing.assert_array_equal(v, x)
    return views


LAYOUT_MODULES = {
    "Linear": lambda: fl.Linear(6, 4),
    "LinearNoBias": lambda: fl.Linear(6, 4, bias=False),
    "Linear+ReLU": lambda: fl.Sequential(fl.Linear(6, 4), fl.ReLU()),
    "Linear+Sigmoid": lambda: fl.Sequential(fl.Linear(6, 4), fl.Sigmoid()),
    "ReLU": fl.ReLU,
    "LeakyReLU": fl.LeakyReLU,
    "Sigmoid": fl.Sigmoid,
    "Tanh": fl.Tanh,
    "Softmax": fl.Softmax,
    "LogSoftmax": fl.LogSoftmax,
    "Softmax0": lambda: fl.Softmax(dim=0),
    "LogSoftmax0": lambda: fl.LogSoftmax(dim=0),
    "Flatten": fl.Flatten,
    "MLP": lambda: fl.Sequential(fl.Linear(6, 5), fl.Tanh(), fl.Linear(5, 3), fl.LogSoftmax()),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(LAYOUT_MODULES))
def test_non_contiguous_inputs_match_contiguous(backend_name, name, dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 6)).astype(dtype)
    fl.manual_seed(0)
    ref_mod = LAYOUT_MODULES[name]().to(dtype)
    y_ref = ref_mod(x)
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    dx_ref = ref_mod.backward(g)
    grads_ref = [p.grad.copy() for p in ref_mod.parameters()]
    for layout, xv in _layouts(x).items():
        fl.manual_seed(0)
        mod = LAYOUT_MODULES[name]().to(dtype)
        x_before = xv.copy()
        y = mod(xv)
        np.testing.assert_array_equal(xv, x_before)          # input untouched
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-7, err_msg=layout)
        gv = _layouts(g)[layout] if g.ndim == 2 else g
        dx = mod.backward(gv)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6, err_msg=layout)
        for p, gr in zip(mod.parameters(), grads_ref):
            np.testing.assert_allclose(p.grad, gr, rtol=1e-5, atol=1e-6, err_msg=layout)
