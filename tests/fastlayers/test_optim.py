"""Optimizer classes: parameters held, never re-homed (shared, rebound, converted, None grads),
parameter groups, zero_grad, both backends agreeing, the notebook aliases, state_dict round trips,
convergence on a quadratic."""
import numpy as np
import pytest

import fastlayers as fl

CONFIGS = [
    (fl.SGD, dict(lr=0.1)),
    (fl.SGD, dict(lr=0.1, momentum=0.9)),
    (fl.SGD, dict(lr=0.1, momentum=0.9, dampening=0.5)),
    (fl.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (fl.SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.1)),
    (fl.RMSprop, dict(lr=0.01)),
    (fl.RMSprop, dict(lr=0.01, centered=True)),
    (fl.RMSprop, dict(lr=0.01, momentum=0.9)),
    (fl.RMSprop, dict(lr=0.01, weight_decay=0.1, centered=True, momentum=0.5)),
    (fl.Adam, dict(lr=0.01)),
    (fl.Adam, dict(lr=0.01, amsgrad=True)),
    (fl.Adam, dict(lr=0.01, weight_decay=0.1)),
    (fl.NAdam, dict(lr=0.01)),
    (fl.NAdam, dict(lr=0.01, weight_decay=0.1)),
    (fl.NAdam, dict(lr=0.01, momentum_decay=0.01)),
    (fl.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (fl.AdamW, dict(lr=0.01)),
    (fl.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in CONFIGS]


def mlp(dtype=np.float32, seed=0):
    fl.manual_seed(seed)
    return fl.Sequential(fl.Linear(5, 7), fl.Tanh(), fl.Linear(7, 3)).to(dtype)


def data(dtype=np.float32):
    r = np.random.default_rng(0)
    return r.standard_normal((16, 5)).astype(dtype), r.integers(0, 3, 16)


def train(model, opt, steps, dtype=np.float32):
    x, y = data(dtype)
    loss_fn = fl.CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        losses.append(loss_fn(model(x), y))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return losses


def _grads(model, x=None, y=None):
    """Forward, zero the gradients, backward: the gradients of one batch."""
    if x is None:
        x, y = data(model[0].weight.dtype)
    loss_fn = fl.CrossEntropyLoss()
    loss_fn(model(x), y)
    model.zero_grad()
    model.backward(loss_fn.backward())


def _sgd_expected(p, lr):
    return p.data - lr * p.grad


def test_optimizer_holds_parameters_not_copies():
    m = mlp()
    arrays = [(p.data, p.grad) for p in m.parameters()]
    opt = fl.Adam(m.parameters())
    assert all(p.data is d and p.grad is g for p, (d, g) in zip(m.parameters(), arrays))
    assert opt.param_groups[0]["params"] == list(m.parameters())
    assert opt.state == {}                      # state is created at a parameter's first step
    train(m, opt, 1)
    assert all(p.data is d for p, (d, _) in zip(m.parameters(), arrays))   # updated in place
    for p in m.parameters():
        s = opt.state[p]
        assert s["step"] == 1 and s["exp_avg"].shape == p.shape and s["exp_avg"].dtype == p.dtype


def test_second_optimizer_over_a_subset_leaves_the_first_working():
    m = mlp()
    first = fl.SGD(m.parameters(), lr=0.1)
    second = fl.SGD(m[2].parameters(), lr=0.1)
    _grads(m)
    expected = [_sgd_expected(p, 0.1) for p in m.parameters()]
    first.step()
    for p, e in zip(m.parameters(), expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-6)
    expected = [_sgd_expected(p, 0.1) for p in m[2].parameters()]
    second.step()
    for p, e in zip(m[2].parameters(), expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-6)


@pytest.mark.parametrize("what", ["grad", "data"])
def test_rebound_arrays_are_the_ones_stepped(what):
    """``p.grad = g`` and ``p.data = d`` after the optimizer exists: the step reads the new
    gradient and updates the new array, which the model then uses (as in PyTorch)."""
    m = mlp()
    opt = fl.SGD(m.parameters(), lr=0.1)
    train(m, opt, 1)
    _grads(m)
    p = m[0].weight
    if what == "grad":
        p.grad = np.full_like(p.data, 0.5)
    else:
        p.data = p.data + 1.0
        p.grad = np.full_like(p.data, 0.5)
    new = p.data
    expected = p.data - 0.1 * 0.5
    opt.step()
    assert p.data is new
    np.testing.assert_allclose(p.data, expected, rtol=1e-6)
    x, _ = data()
    ref = fl.Linear(5, 7)
    ref.weight.data, ref.bias.data = expected, m[0].bias.data
    np.testing.assert_array_equal(m[0](x), ref(x))          # the model computes with it


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_model_converted_after_the_optimizer_trains_in_the_new_dtype(cls, kw):
    """``model.double()`` after a few steps: the optimizer follows (its state converted), and
    the run matches one that was float64 from the start with the same state."""
    m32 = mlp()
    o32 = cls(m32.parameters(), **kw)
    train(m32, o32, 3)
    m64 = mlp(np.float64)
    m64.load_state_dict(m32.state_dict())
    o64 = cls(m64.parameters(), **kw)
    o64.load_state_dict(o32.state_dict())               # cast to float64 on load
    m32.double()
    for p in m32.parameters():
        assert p.dtype == np.float64
    la = train(m32, o32, 3, np.float64)
    lb = train(m64, o64, 3, np.float64)
    assert la == lb
    for p, q in zip(m32.parameters(), m64.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert all(a.dtype == np.float64 for s in o32.state.values() for a in s.values()
               if isinstance(a, np.ndarray))


def test_none_grad_is_skipped():
    m = mlp()
    opt = fl.Adam(m.parameters(), lr=0.1)
    train(m, opt, 2)
    _grads(m)
    frozen = m[0].weight
    frozen.grad = None
    before = frozen.data.copy()
    steps = opt.state[frozen]["step"]
    others = {id(p): p.data.copy() for p in m.parameters() if p is not frozen}
    opt.step()
    np.testing.assert_array_equal(frozen.data, before)
    assert opt.state[frozen]["step"] == steps
    for p in m.parameters():
        if p is not frozen:
            assert not np.array_equal(p.data, others[id(p)])
    # the next backward allocates a fresh gradient
    _grads(m)
    assert frozen.grad is not None and frozen.grad.shape == frozen.shape


def test_zero_grad_set_to_none_then_backward_allocates():
    m = mlp()
    opt = fl.SGD(m.parameters(), lr=0.1)
    train(m, opt, 1)
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in m.parameters())
    opt.step()                                           # no gradients: nothing moves
    loss_fn = fl.CrossEntropyLoss()
    x, y = data()
    loss_fn(m(x), y)
    m.backward(loss_fn.backward())
    fresh = [p.grad.copy() for p in m.parameters()]
    m.zero_grad()
    loss_fn(m(x), y)
    m.backward(loss_fn.backward())
    for p, g in zip(m.parameters(), fresh):
        np.testing.assert_array_equal(p.grad, g)         # allocated zeros, then accumulated


def test_parameter_groups_use_their_own_hyperparameters():
    m = mlp()
    opt = fl.SGD([{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.5}],
                 lr=0.1, momentum=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["momentum"] == 0.0        # defaults fill the rest
    _grads(m)
    expected = [_sgd_expected(p, 0.1) for p in m[0].parameters()] + [
        _sgd_expected(p, 0.5) for p in m[2].parameters()]
    opt.step()
    for p, e in zip(m.parameters(), expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-6)
    opt.param_groups[0]["lr"] = 0.0 + 1e-3              # writable between steps
    _grads(m)
    expected = _sgd_expected(m[0].weight, 1e-3)
    opt.step()
    np.testing.assert_allclose(m[0].weight.data, expected, rtol=1e-6)


def test_add_param_group():
    m = mlp()
    opt = fl.Adam(m[0].parameters(), lr=0.1)
    opt.add_param_group({"params": m[2].parameters(), "lr": 0.01})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    train(m, opt, 1)
    assert all(opt.state[p]["step"] == 1 for p in m.parameters())
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sorted(sd["state"]) == [0, 1, 2, 3]


def test_disjoint_optimizers_each_update_their_own_parameters():
    m = mlp()
    opt_a = fl.SGD(m[0].parameters(), lr=0.1)
    opt_b = fl.Adam(m[2].parameters(), lr=0.1)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    x, y = data()
    loss_fn = fl.CrossEntropyLoss()
    loss_fn(m(x), y)
    opt_a.zero_grad()
    opt_b.zero_grad()
    m.backward(loss_fn.backward())
    opt_a.step()
    after_a = {k: v.copy() for k, v in m.state_dict().items()}
    assert not np.array_equal(after_a["0.weight"], before["0.weight"])
    np.testing.assert_array_equal(after_a["2.weight"], before["2.weight"])
    opt_b.step()
    assert not np.array_equal(m.state_dict()["2.weight"], before["2.weight"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_backends_agree_over_many_steps(cls, kw, dtype):
    results = []
    for name in ("numba", "numpy"):
        with fl.use_backend(name):
            m = mlp(dtype)
            opt = cls(m.parameters(), **kw)
            losses = train(m, opt, 20, dtype)
            results.append((losses, m.state_dict(), opt.state_dict()))
    # float32: the two backends round differently (exp, FMA, summation order) and 20 steps of
    # RMSprop amplify that, so absolute tolerance scales with each array's magnitude.
    rtol, atol = (2e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)

    def close(a, b, name=""):
        scale = max(1.0, float(np.abs(b).max())) if np.size(b) else 1.0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale, err_msg=name)
    close(results[0][0], results[1][0])
    for k in results[0][1]:
        close(results[0][1][k], results[1][1][k], k)
    for i, entry in results[0][2]["state"].items():
        for k, v in entry.items():
            close(v, results[1][2]["state"][i][k], f"state[{i}][{k!r}]")
    assert results[0][0][-1] < results[0][0][0]          # it learns


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_state_dict_round_trip_resumes_identically(cls, kw):
    m1 = mlp(np.float64)
    o1 = cls(m1.parameters(), **kw)
    train(m1, o1, 5, np.float64)
    m2 = mlp(np.float64, seed=1)
    o2 = cls(m2.parameters(), **kw)
    m2.load_state_dict(m1.state_dict())
    o2.load_state_dict(o1.state_dict())
    assert all(o2.state[p]["step"] == 5 for p in m2.parameters())
    l1 = train(m1, o1, 5, np.float64)
    l2 = train(m2, o2, 5, np.float64)
    assert l1 == l2
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(v, m2.state_dict()[k])


def test_state_dict_holds_copies():
    m = mlp()
    opt = fl.Adam(m.parameters())
    train(m, opt, 1)
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][...] = 7
    sd["param_groups"][0]["lr"] = 9.0
    assert not np.any(opt.state[m[0].weight]["exp_avg"] == 7)
    assert opt.param_groups[0]["lr"] == 1e-3


def test_optimizer_load_state_dict_checks_before_writing():
    m = mlp()
    opt = fl.Adam(m.parameters())
    train(m, opt, 2)
    before = opt.state_dict()
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros(3)              # wrong shape, after a good entry
    bad["state"][1]["exp_avg"] = np.zeros_like(bad["state"][1]["exp_avg"])
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][3]["step"] = "two"
    bad["param_groups"][0]["lr"] = 5.0
    with pytest.raises(ValueError, match="step"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i in before["state"]:
        for k in before["state"][i]:
            np.testing.assert_array_equal(after["state"][i][k], before["state"][i][k])


def test_momentum_alias_is_sgd_with_notebook_formula():
    """Momentum(lr, mu): v = mu v + g, p -= lr v  ==  the notebooks' v = mu v - lr g, p += v."""
    fl.manual_seed(0)
    p = fl.Parameter(np.array([1.0, -2.0, 0.5]))
    opt = fl.Momentum([p])
    assert isinstance(opt, fl.SGD)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["lr"] == 1e-2
    ref, v = p.data.copy(), np.zeros(3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        g = rng.standard_normal(3)
        p.grad[...] = g
        opt.step()
        v = 0.9 * v - 1e-2 * g
        ref = ref + v
    np.testing.assert_allclose(p.data, ref, rtol=1e-12)
    opt2 = fl.Momentum([fl.Parameter(np.zeros(2))], lr=0.5, momentum=0.5, nesterov=True)
    assert opt2.defaults == dict(lr=0.5, momentum=0.5, dampening=0.0, weight_decay=0.0,
                                 nesterov=True)


def test_nadam_alias():
    assert fl.Nadam is fl.NAdam
    opt = fl.Nadam([fl.Parameter(np.zeros(2))])
    assert isinstance(opt, fl.NAdam) and opt.defaults["lr"] == 2e-3


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_converges_on_a_quadratic(cls, kw):
    """minimise 0.5 * sum(a * (p - c)^2) from p = 0."""
    a = np.array([1.0, 2.0, 0.5, 3.0])
    c = np.array([1.0, -1.0, 2.0, 0.5])
    p = fl.Parameter(np.zeros(4))
    opt = cls([p], **kw)
    start = 0.5 * np.sum(a * c * c)
    for _ in range(300):
        opt.zero_grad()
        p.grad += a * (p.data - c)
        opt.step()
    assert 0.5 * np.sum(a * (p.data - c) ** 2) < 0.05 * start


def test_repr_and_step_count():
    p = fl.Parameter(np.zeros(2))
    opt = fl.SGD([p], lr=0.5, momentum=0.1)
    assert repr(opt).startswith("SGD (") and "lr: 0.5" in repr(opt) and "momentum: 0.1" in repr(opt)
    assert p not in opt.state
    opt.step()
    opt.step()
    assert opt.state[p]["step"] == 2


def test_state_arrays_replaced_by_the_user_are_the_ones_stepped():
    """The optimizer's cached views follow a state array rebound between steps."""
    p = fl.Parameter(np.zeros(3))
    opt = fl.SGD([p], lr=1.0, momentum=0.5)
    p.grad[...] = 1.0
    opt.step()                                    # buffer = g = 1, p = -1
    opt.state[p]["momentum_buffer"] = np.full(3, 4.0)
    opt.step()                                    # buffer = 0.5 * 4 + 1 = 3, p = -1 - 3
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], 3.0)
    np.testing.assert_array_equal(p.data, -4.0)
    opt.load_state_dict(opt.state_dict())         # copies: the views follow them too
    opt.step()                                    # buffer = 0.5 * 3 + 1 = 2.5
    np.testing.assert_array_equal(p.data, -6.5)


def test_named_parameters_as_pytorch_takes_them():
    m = mlp()
    opt = fl.SGD(m.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["params"] == list(m.parameters())
    assert opt.param_groups[0]["param_names"] == [n for n, _ in m.named_parameters()]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["0.weight", "0.bias", "2.weight",
                                                                  "2.bias"]
    train(m, opt, 1)
