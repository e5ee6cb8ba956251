"""Loss modules' options: float64 gradient checks of every loss and option (reduction='none'
included), parity with PyTorch on Hypothesis-drawn options (class weights, ignore_index with
targets actually ignored, label smoothing, every reduction, unbatched and K-dim inputs, BCE weights
and pos_weight, random upstream gradients), the backward contract of reduction='none', the weight
buffers in state dicts."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlayers as fl
from fastlayers.gradcheck import gradcheck

try:
    import torch
except ImportError:          # the parity tests skip; the rest runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

REDUCTIONS = ["mean", "sum", "none"]


def rng(seed):
    return np.random.default_rng(seed)


def probs(shape, seed, axis):
    t = rng(seed).random(shape) + 0.05
    return t / t.sum(axis=axis, keepdims=True)


def labels_with_ignored(shape, c, ignore_index, seed, frac=0.3):
    """Class indices in [0, c) of ``shape``, about ``frac`` of them (and at least one when there
    are two or more) set to ``ignore_index``."""
    r = rng(seed)
    y = r.integers(0, c, shape)
    mask = r.random(shape) < frac
    if y.size > 1 and frac > 0:
        mask.reshape(-1)[0] = True
    y[mask] = ignore_index
    return y


def away_from_kinks(shape, seed, kinks=(0.0, 0.5, 1.0)):
    """(input, target) whose differences stay at least 0.05 from every kink (finite
    differences of L1/Huber/SmoothL1 across a kink are not the derivative)."""
    r = rng(seed)
    x = r.standard_normal(shape)
    d = r.choice([-1.7, -0.8, -0.3, 0.2, 0.7, 1.3], shape) + r.uniform(-0.04, 0.04, shape)
    assert min(np.abs(np.abs(d) - k).min() for k in kinks) > 0.05
    return x, x - d


class WithTarget(fl.Module):
    """A loss of reduction='none' as a module of its input alone (the target fixed), so that
    gradcheck compares backward(r) with the differences of sum(r * loss(input))."""

    def __init__(self, loss, target):
        super().__init__()
        self.loss = loss
        self.target = target

    def forward(self, x):
        return self.loss(x, self.target)

    def backward(self, grad_output):
        return self.loss.backward(grad_output)


def _ce_case(shape, seed, **kw):
    c = shape[0] if len(shape) == 1 else shape[1]
    lab_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
    ignore = kw.get("ignore_index", -100)
    return rng(seed).standard_normal(shape) * 2, labels_with_ignored(lab_shape, c, ignore, seed)


def _weight(c, seed):
    return rng(seed).uniform(0.2, 2.0, c)


# name -> (factory(reduction) -> loss module, input, target)
def gradcheck_case(name):
    if name == "ce-weight-ignore-smooth":
        x, y = _ce_case((5, 4), 0, ignore_index=1)
        return (lambda r: fl.CrossEntropyLoss(_weight(4, 1), ignore_index=1, reduction=r,
                                              label_smoothing=0.3)), x, y
    if name == "ce-kdim":
        x, y = _ce_case((2, 3, 2, 2), 2)
        return (lambda r: fl.CrossEntropyLoss(_weight(3, 3), reduction=r,
                                              label_smoothing=0.2)), x, y
    if name == "ce-unbatched":
        x = rng(4).standard_normal(4)
        return (lambda r: fl.CrossEntropyLoss(_weight(4, 5), reduction=r,
                                              label_smoothing=0.1)), x, np.array(2)
    if name == "ce-probs-weight-smooth":
        x = rng(6).standard_normal((3, 4))
        return (lambda r: fl.CrossEntropyLoss(_weight(4, 7), reduction=r,
                                              label_smoothing=0.4)), x, probs((3, 4), 8, 1)
    if name == "ce-probs-kdim":
        x = rng(9).standard_normal((2, 3, 2))
        return (lambda r: fl.CrossEntropyLoss(_weight(3, 10), reduction=r)), x, probs(
            (2, 3, 2), 11, 1)
    if name == "nll-weight-ignore":
        x, y = _ce_case((5, 4), 12, ignore_index=3)
        return (lambda r: fl.NLLLoss(_weight(4, 13), ignore_index=3, reduction=r)), x, y
    if name == "nll-kdim":
        x, y = _ce_case((2, 3, 3), 14)
        return (lambda r: fl.NLLLoss(_weight(3, 15), reduction=r)), x, y
    if name == "nll-unbatched":
        return (lambda r: fl.NLLLoss(reduction=r)), rng(16).standard_normal(3), np.array(1)
    if name == "mse":
        x = rng(17).standard_normal((3, 4))
        return (lambda r: fl.MSELoss(r)), x, rng(18).standard_normal((3, 4))
    if name == "l1":
        return (lambda r: fl.L1Loss(r)), *away_from_kinks((3, 4), 19)
    if name == "huber":
        return (lambda r: fl.HuberLoss(r, delta=0.5)), *away_from_kinks((3, 4), 20)
    if name == "smoothl1":
        return (lambda r: fl.SmoothL1Loss(r, beta=0.5)), *away_from_kinks((3, 4), 21)
    if name == "smoothl1-beta0":
        return (lambda r: fl.SmoothL1Loss(r, beta=0.0)), *away_from_kinks((3, 4), 22)
    if name == "bce-weight":
        p, t = rng(23).uniform(0.05, 0.95, (3, 4)), rng(24).uniform(0, 1, (3, 4))
        return (lambda r: fl.BCELoss(_weight(4, 25), reduction=r)), p, t
    if name == "bcelogits-weight-pos-weight":
        x, t = rng(26).standard_normal((3, 4)) * 2, rng(27).uniform(0, 1, (3, 4))
        return (lambda r: fl.BCEWithLogitsLoss(_weight(3, 28)[:, None], reduction=r,
                                               pos_weight=_weight(4, 29))), x, t
    if name == "crossentropy-legacy-labels":
        return (lambda r: fl.CrossEntropy(reduction=r)), probs((4, 3), 30, 1), np.array(
            [0, 2, 1, 1])
    if name == "crossentropy-legacy-probs":
        return (lambda r: fl.CrossEntropy(reduction=r)), probs((4, 3), 31, 1), probs((4, 3), 32, 1)
    raise KeyError(name)


GRADCHECK = ["ce-weight-ignore-smooth", "ce-kdim", "ce-unbatched", "ce-probs-weight-smooth",
             "ce-probs-kdim", "nll-weight-ignore", "nll-kdim", "nll-unbatched", "mse", "l1",
             "huber", "smoothl1", "smoothl1-beta0", "bce-weight", "bcelogits-weight-pos-weight",
             "crossentropy-legacy-labels", "crossentropy-legacy-probs"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", GRADCHECK)
def test_gradcheck(backend_name, name, reduction):
    factory, x, t = gradcheck_case(name)
    loss = factory(reduction)
    res = gradcheck(WithTarget(loss, t), x) if reduction == "none" else gradcheck(loss, x,
                                                                                 target=t)
    assert res.ok, res


# ------------------------------------------------------------------------------ parity with torch

def assert_rel(actual, expected, dtype, what):
    """Relative error below 1e-5 (float32) or 1e-10 (float64), measured against the largest
    magnitude of ``expected``; NaN exactly where ``expected`` is NaN."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, what
    nan = np.isnan(e)
    np.testing.assert_array_equal(np.isnan(a), nan, err_msg=what)
    a, e = a[~nan], e[~nan]
    tol = 1e-5 if dtype == np.float32 else 1e-10
    scale = max(float(np.abs(e).max(initial=0.0)), 1e-30)
    assert float(np.abs(a - e).max(initial=0.0)) <= tol * scale, (what, a, e)


def compare_with_torch(ours, theirs, x, target, torch_target, dtype, seed):
    """Loss value and input gradient of ``ours`` vs the torch loss ``theirs``, with a random
    upstream gradient (an array of the loss's shape under 'none', a number otherwise)."""
    value = ours(x, target)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    vt = theirs(xt, torch_target)
    assert_rel(value, vt.detach().numpy(), dtype, "loss")
    if ours.reduction == "none":
        assert isinstance(value, np.ndarray) and value.dtype == x.dtype
        g = rng(seed).standard_normal(np.shape(value)).astype(dtype)
        gt = torch.from_numpy(g.copy())
    else:
        assert isinstance(value, float)
        g = float(rng(seed).uniform(0.5, 2.0))
        gt = torch.tensor(g, dtype=xt.dtype)
    (dx_t,) = torch.autograd.grad(vt, xt, gt)
    dx = ours.backward(g)
    assert dx.dtype == x.dtype
    assert_rel(dx, dx_t.numpy(), dtype, "input gradient")


def T(a):
    return None if a is None else torch.from_numpy(np.array(a))


@st.composite
def class_options(draw):
    kind = draw(st.sampled_from(["ce", "ce-probs", "nll"]))
    c = draw(st.integers(1, 6))
    n = draw(st.integers(1, 6))
    layout = draw(st.sampled_from(["unbatched", "2d", "2d", "kdim"]))
    shape = {"unbatched": (c,), "2d": (n, c),
             "kdim": (n, c) + draw(st.sampled_from([(1,), (3,), (2, 3)]))}[layout]
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    weight = rng(seed + 1).uniform(0.2, 2.0, c).astype(dtype) if draw(st.booleans()) else None
    ignore = -100 if kind == "ce-probs" else draw(st.sampled_from([-100, 255, 0, c - 1]))
    smoothing = 0.0 if kind == "nll" else draw(st.sampled_from([0.0, 1.0]) | st.floats(0, 1))
    reduction = draw(st.sampled_from(REDUCTIONS))
    frac = draw(st.sampled_from([0.0, 0.3, 0.3, 1.0]))
    return kind, shape, dtype, seed, weight, ignore, smoothing, reduction, frac


@needs_torch
@settings(max_examples=25)
@given(opts=class_options())
def test_class_losses_match_torch(backend_name, opts):
    kind, shape, dtype, seed, weight, ignore, smoothing, reduction, frac = opts
    x = (rng(seed).standard_normal(shape) * 3).astype(dtype)
    c = shape[0] if len(shape) == 1 else shape[1]
    if kind == "ce-probs":
        target = probs(shape, seed + 2, 0 if len(shape) == 1 else 1).astype(dtype)
        torch_target = T(target)
    else:
        lab_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
        target = labels_with_ignored(lab_shape, c, ignore, seed + 2, frac)
        torch_target = T(target)
    if kind == "nll":
        x = x - np.log(np.exp(x).sum(axis=0 if len(shape) == 1 else 1, keepdims=True))
        ours = fl.NLLLoss(weight, ignore_index=ignore, reduction=reduction)
        theirs = torch.nn.NLLLoss(T(weight), ignore_index=ignore, reduction=reduction)
    else:
        ours = fl.CrossEntropyLoss(weight, ignore_index=ignore, reduction=reduction,
                                   label_smoothing=smoothing)
        theirs = torch.nn.CrossEntropyLoss(T(weight), ignore_index=ignore, reduction=reduction,
                                           label_smoothing=smoothing)
    compare_with_torch(ours, theirs, x.astype(dtype), target, torch_target, dtype, seed + 3)


POINTWISE = ["mse", "l1", "huber", "smoothl1", "bce", "bcelogits"]


@st.composite
def pointwise_options(draw):
    name = draw(st.sampled_from(POINTWISE))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    param = draw(st.sampled_from([0.5, 1.0, 2.0]) | st.floats(0.05, 3.0))
    if name == "smoothl1" and draw(st.booleans()):
        param = 0.0
    reduction = draw(st.sampled_from(REDUCTIONS))
    wshape = draw(st.sampled_from([None, "full", "last", "ones"]))
    pwshape = draw(st.sampled_from([None, "last"]))
    return name, shape, dtype, seed, param, reduction, wshape, pwshape


def _broadcastable(kind, shape, seed, dtype):
    if kind is None:
        return None
    wshape = {"full": shape, "last": shape[-1:], "ones": (1,) * len(shape)}[kind]
    return rng(seed).uniform(0.0, 2.0, wshape).astype(dtype)


@needs_torch
@settings(max_examples=25)
@given(opts=pointwise_options())
def test_pointwise_losses_match_torch(backend_name, opts):
    name, shape, dtype, seed, param, reduction, wshape, pwshape = opts
    r = rng(seed)
    nn = torch.nn
    if name in ("bce", "bcelogits"):
        x = (r.uniform(0, 1, shape) if name == "bce" else r.standard_normal(shape) * 3)
        t = r.uniform(0, 1, shape)
        w = _broadcastable(wshape, shape, seed + 1, dtype)
        if name == "bce":
            ours, theirs = fl.BCELoss(w, reduction), nn.BCELoss(T(w), reduction=reduction)
        else:
            pw = _broadcastable(pwshape, shape, seed + 2, dtype)
            ours = fl.BCEWithLogitsLoss(w, reduction, pw)
            theirs = nn.BCEWithLogitsLoss(T(w), reduction=reduction, pos_weight=T(pw))
    else:
        x, t = r.standard_normal(shape), r.standard_normal(shape)
        flat_x, flat_t = x.reshape(-1), t.reshape(-1)
        flat_t[::3] = flat_x[::3]                               # d = 0
        flat_x[1::3] = 0.0                                      # |d| = param
        flat_t[1::3] = np.float32(param) * np.where(r.random(flat_t[1::3].size) < 0.5, -1, 1)
        ours, theirs = {
            "mse": (fl.MSELoss(reduction), nn.MSELoss(reduction=reduction)),
            "l1": (fl.L1Loss(reduction), nn.L1Loss(reduction=reduction)),
            "huber": (fl.HuberLoss(reduction, param or 1.0),
                      nn.HuberLoss(reduction=reduction, delta=param or 1.0)),
            "smoothl1": (fl.SmoothL1Loss(reduction, param),
                         nn.SmoothL1Loss(reduction=reduction, beta=param)),
        }[name]
    x, t = x.astype(dtype), t.astype(dtype)
    compare_with_torch(ours, theirs, x, t, T(t), dtype, seed + 3)


# ----------------------------------------------------------------------- the backward of 'none'

NONE_LOSSES = {  # class name -> the kind of target it takes
    "CrossEntropyLoss": "labels", "NLLLoss": "labels", "CrossEntropy": "labels",
    "MSELoss": "same", "L1Loss": "same", "HuberLoss": "same", "SmoothL1Loss": "same",
    "BCELoss": "unit", "BCEWithLogitsLoss": "unit",
}


def _none_inputs(target_kind, seed=0):
    r = rng(seed)
    x = r.uniform(0.1, 0.9, (4, 3))
    if target_kind == "labels":
        return x, r.integers(0, 3, 4)
    return x, r.uniform(0, 1, (4, 3))


@pytest.mark.parametrize("name", list(NONE_LOSSES))
def test_none_backward_needs_an_upstream_array(backend_name, name):
    """Without grad_output the backward of a non-scalar loss raises (PyTorch: "grad can be
    implicitly created only for scalar outputs") and keeps the forward's gradient: the next
    backward with an array g gives g times each element's (each row's) gradient, which is the
    gradient of the sum."""
    kind = NONE_LOSSES[name]
    cls = getattr(fl, name)
    x, t = _none_inputs(kind)
    loss = cls(reduction="none")
    value = loss(x, t)
    assert isinstance(value, np.ndarray)
    assert value.shape == ((4,) if kind == "labels" else x.shape)
    with pytest.raises(RuntimeError, match="implicitly created only for scalar outputs"):
        loss.backward()
    g = rng(1).standard_normal(value.shape)
    dx = loss.backward(g)
    summed = cls(reduction="sum")
    np.testing.assert_allclose(value.sum(), summed(x, t), rtol=1e-12)
    per_element = summed.backward()
    np.testing.assert_allclose(dx, per_element * (g[:, None] if kind == "labels" else g),
                               rtol=1e-12)


def test_none_with_one_element_takes_a_number(backend_name):
    """A 'none' loss of one element (unbatched input, or a batch of one) may be backpropagated
    without grad_output, as PyTorch allows for a one-element output."""
    x = rng(2).standard_normal(5)
    loss = fl.CrossEntropyLoss(reduction="none", label_smoothing=0.1)
    value = loss(x, np.array(3))
    assert isinstance(value, np.ndarray) and value.shape == ()
    g1 = loss.backward()
    loss(x, np.array(3))
    np.testing.assert_allclose(loss.backward(2.5), 2.5 * g1, rtol=1e-14)
    loss(x, np.array(3))
    np.testing.assert_allclose(loss.backward(np.array(2.5)), 2.5 * g1, rtol=1e-14)
    batch = fl.CrossEntropyLoss(reduction="none", label_smoothing=0.1)
    assert batch(x[None], np.array([3])).shape == (1,)
    np.testing.assert_allclose(batch.backward(), g1[None], rtol=1e-14)
    mean = fl.CrossEntropyLoss(label_smoothing=0.1)
    mean(x, np.array(3))
    np.testing.assert_allclose(mean.backward(np.array(2.5)), 2.5 * g1, rtol=1e-14)


def test_no_grad_none_returns_the_array_and_keeps_nothing(backend_name):
    loss = fl.HuberLoss("none")
    x, t = _none_inputs("same")
    with fl.no_grad():
        value = loss(x, t)
    assert value.shape == x.shape
    with pytest.raises(RuntimeError, match="no_grad"):
        loss.backward(np.ones_like(x))


@pytest.mark.parametrize("name", ["HuberLoss", "SmoothL1Loss", "L1Loss", "CrossEntropyLoss",
                                  "NLLLoss"])
def test_empty_input(backend_name, name):
    """Over no elements: the mean is NaN, the sum 0, 'none' an empty array; gradients empty."""
    kind = NONE_LOSSES[name]
    x = np.zeros((0, 3))
    t = np.zeros(0, int) if kind == "labels" else np.zeros((0, 3))
    for reduction, expected in (("mean", np.nan), ("sum", 0.0)):
        loss = getattr(fl, name)(reduction=reduction)
        np.testing.assert_array_equal(loss(x, t), expected)
        assert loss.backward().shape == x.shape
    loss = getattr(fl, name)(reduction="none")
    assert loss(x, t).shape == t.shape[:1] + ((3,) if kind != "labels" else ())
    assert loss.backward(np.zeros(loss(x, t).shape)).shape == x.shape


# ---------------------------------------------------------------------------- semantics, state

def test_smooth_l1_with_beta_zero_is_l1(backend_name):
    x, t = rng(3).standard_normal((4, 5)), rng(4).standard_normal((4, 5))
    t[0, 0] = x[0, 0]
    a, b = fl.SmoothL1Loss(beta=0.0), fl.L1Loss()
    assert a(x, t) == b(x, t)
    np.testing.assert_array_equal(a.backward(), b.backward())
    np.testing.assert_array_equal(fl.L1Loss("none")(x, t), np.abs(x - t))


def test_ignore_index_of_a_real_class_drops_those_targets(backend_name):
    x = rng(5).standard_normal((6, 4))
    y = np.array([0, 1, 2, 1, 3, 1])
    kept = y != 1
    w = _weight(4, 6)
    a = fl.CrossEntropyLoss(w, ignore_index=1, label_smoothing=0.2)
    b = fl.CrossEntropyLoss(w, label_smoothing=0.2)
    assert a(x, y) == pytest.approx(b(x[kept], y[kept]), rel=1e-12)
    ga = a.backward()
    np.testing.assert_array_equal(ga[~kept], 0)
    np.testing.assert_allclose(ga[kept], b.backward(), rtol=1e-12)


def test_weight_is_cast_to_the_input_dtype(backend_name):
    x = rng(7).standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 2, 1])
    w64 = _weight(3, 8)
    a, b = fl.CrossEntropyLoss(w64), fl.CrossEntropyLoss(w64.astype(np.float32))
    assert a(x, y) == b(x, y)
    ga = a.backward()
    assert ga.dtype == np.float32
    np.testing.assert_array_equal(ga, b.backward())
    assert a.weight.dtype == np.float64              # the buffer is left as given
    assert fl.BCEWithLogitsLoss(pos_weight=w64).to(np.float32).pos_weight.dtype == np.float32


@needs_torch
def test_state_dicts_hold_torchs_keys_and_load_torchs_values():
    w, pw = _weight(3, 9), _weight(3, 10)
    pairs = [
        (fl.CrossEntropyLoss(w.copy()), torch.nn.CrossEntropyLoss(T(w))),
        (fl.NLLLoss(w.copy()), torch.nn.NLLLoss(T(w))),
        (fl.BCELoss(w.copy()), torch.nn.BCELoss(T(w))),
        (fl.BCEWithLogitsLoss(w.copy(), pos_weight=pw.copy()),
         torch.nn.BCEWithLogitsLoss(T(w), pos_weight=T(pw))),
        (fl.BCEWithLogitsLoss(pos_weight=pw.copy()), torch.nn.BCEWithLogitsLoss(pos_weight=T(pw))),
        (fl.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()),
        (fl.HuberLoss(), torch.nn.HuberLoss()),
    ]
    for ours, theirs in pairs:
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert list(sd) == list(tsd), type(ours).__name__
        for k in sd:
            np.testing.assert_array_equal(sd[k], tsd[k].numpy())
        changed = {k: v * 3 for k, v in tsd.items()}
        ours.load_state_dict(changed)
        for k in sd:
            np.testing.assert_array_equal(getattr(ours, k), changed[k].numpy())


def test_repr_names_the_options():
    assert repr(fl.CrossEntropyLoss(ignore_index=3, label_smoothing=0.25)) == (
        "CrossEntropyLoss(ignore_index=3, reduction='mean', label_smoothing=0.25)")
    assert repr(fl.HuberLoss("sum", 2.0)) == "HuberLoss(reduction='sum', delta=2)"
    assert repr(fl.SmoothL1Loss(beta=0.5)) == "SmoothL1Loss(reduction='mean', beta=0.5)"
    assert repr(fl.NLLLoss(reduction="none")) == "NLLLoss(ignore_index=-100, reduction='none')"


def test_legacy_cross_entropy_none_is_the_per_row_loss(backend_name):
    p = probs((4, 3), 11, 1)
    y = np.array([0, 2, 1, 1])
    np.testing.assert_allclose(fl.CrossEntropy(reduction="none")(p, y),
                               -np.log(p[np.arange(4), y]), rtol=1e-14)
