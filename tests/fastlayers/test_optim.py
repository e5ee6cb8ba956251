"""Optimizer classes: packing into one buffer, zero_grad, both backends agreeing, the notebook
aliases, state_dict round trips, convergence on a quadratic."""
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


def test_packing_rehomes_parameters_as_views():
    m = mlp()
    before = [p.data.copy() for p in m.parameters()]
    opt = fl.Adam(m.parameters())
    n = sum(p.size for p in m.parameters())
    assert opt.flat.shape == opt.flat_grad.shape == (n,)
    offset = 0
    for p, b in zip(m.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
        assert np.shares_memory(p.data, opt.flat) and np.shares_memory(p.grad, opt.flat_grad)
        np.testing.assert_array_equal(opt.flat[offset:offset + p.size], b.reshape(-1))
        assert p.data.flags.c_contiguous and p.grad.flags.c_contiguous
        offset += p.size
    for p in m.parameters():
        p.grad[...] = 1
    opt.zero_grad()
    assert np.all(opt.flat_grad == 0) and all(np.all(p.grad == 0) for p in m.parameters())
    # Gradients written by backward land in the packed buffer.
    train(m, opt, 1)
    x, y = data()
    loss_fn = fl.CrossEntropyLoss()
    loss_fn(m(x), y)
    opt.zero_grad()
    m.backward(loss_fn.backward())
    assert np.any(opt.flat_grad != 0)
    np.testing.assert_array_equal(opt.flat_grad[:m[0].weight.size], m[0].weight.grad.reshape(-1))


def test_second_optimizer_over_the_same_parameters_shares_the_buffer():
    m = mlp()
    first = fl.SGD(m.parameters(), lr=0.1)
    second = fl.SGD(m.parameters(), lr=0.1)
    assert second.flat is first.flat and second.flat_grad is first.flat_grad
    train(m, second, 2)
    for p in m.parameters():
        assert np.shares_memory(p.data, first.flat)


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
    for k in results[0][2]:
        close(results[0][2][k], results[1][2][k], k)
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
    assert o2.step_count == o1.step_count == 5
    l1 = train(m1, o1, 5, np.float64)
    l2 = train(m2, o2, 5, np.float64)
    assert l1 == l2
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(v, m2.state_dict()[k])


def test_optimizer_load_state_dict_checks_before_writing():
    m = mlp()
    opt = fl.Adam(m.parameters())
    train(m, opt, 2)
    before = opt.state_dict()
    bad = {k: np.zeros_like(v) for k, v in before.items()}
    del bad["exp_avg"]
    with pytest.raises(KeyError, match="exp_avg"):
        opt.load_state_dict(bad)
    bad = {k: np.zeros_like(v) for k, v in before.items()}
    bad["exp_avg_sq"] = np.zeros(3)
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


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
    opt = fl.SGD([fl.Parameter(np.zeros(2))], lr=0.5, momentum=0.1)
    assert repr(opt).startswith("SGD(") and "lr=0.5" in repr(opt) and "momentum=0.1" in repr(opt)
    assert opt.step_count == 0
    opt.step()
    opt.step()
    assert opt.step_count == 2
