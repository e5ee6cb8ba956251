"""Parity with PyTorch (skipped where torch is absent): forward values, input and parameter gradients
of every layer and loss, a whole MLP, and 100-step optimizer trajectories for every option."""
import numpy as np
import pytest

import fastlayers as fl

torch = pytest.importorskip("torch")
nn = torch.nn

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def T(a, grad=False):
    t = torch.from_numpy(np.array(a))
    return t.requires_grad_(True) if grad else t


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)


def rnd(shape, dtype, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------------------------------- layers

def compare_module(ours, theirs, x, dtype, backend_name):
    """Forward, input gradient and parameter gradients of ``ours`` vs the torch module ``theirs``
    (whose parameters have been copied from ours), for a random upstream gradient."""
    y = ours(x)
    xt = T(x, grad=True)
    yt = theirs(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol(dtype))
    g = rnd(y.shape, dtype, 99)
    ours.zero_grad()
    dx = ours.backward(g)
    yt.backward(T(g))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))
    for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == tname
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **tol(dtype), err_msg=name)


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5)])
def test_linear(backend_name, dtype, bias, shape):
    fl.manual_seed(0)
    lin = fl.Linear(5, 4, bias=bias).to(dtype)
    compare_module(lin, fl.to_torch(lin), rnd(shape, dtype, 1), dtype, backend_name)


ACTS = {"ReLU": fl.ReLU, "LeakyReLU": lambda: fl.LeakyReLU(0.1), "Sigmoid": fl.Sigmoid,
        "Tanh": fl.Tanh}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTS))
def test_activations(backend_name, dtype, act):
    m = ACTS[act]()
    compare_module(m, fl.to_torch(m), rnd((4, 3, 5), dtype, 2, scale=3), dtype, backend_name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTS))
def test_fused_linear_activation(backend_name, dtype, act):
    fl.manual_seed(1)
    m = fl.Sequential(fl.Linear(5, 6), ACTS[act]()).to(dtype)
    compare_module(m, fl.to_torch(m), rnd((8, 5), dtype, 3), dtype, backend_name)


SPECIAL = [-np.inf, np.nan, np.inf, -2.0, -0.0, 0.0, 3.0, np.nan]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["ReLU", "LeakyReLU"])
def test_piecewise_linear_at_nan_and_inf(backend_name, build, dtype, act):
    # PyTorch: NaN passes through, relu(-inf) = 0; backward: a NaN output passes the gradient under
    # ReLU (threshold_backward) and scales it by the slope under LeakyReLU (leaky_relu_backward).
    x = np.array([SPECIAL] * 3, dtype)
    g = np.arange(1, x.size + 1, dtype=dtype).reshape(x.shape)
    m = ACTS[act]()
    y = m(x)
    dx = m.backward(g)
    xt = T(x, grad=True)
    yt = fl.to_torch(m)(xt)
    yt.backward(T(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_relu_eval_at_nan_and_inf(backend_name, build, dtype):
    # the fused normalise + ReLU pass: -inf must give 0 (z * 0 would be NaN), NaN stays NaN
    c = len(SPECIAL)
    bn = fl.BatchNorm1d(c, dtype=dtype)
    bn.weight.data[...] = np.linspace(-1.5, 2.0, c)   # a negative scale turns -inf into +inf
    bn.bias.data[...] = np.linspace(-0.5, 0.5, c)
    bn.running_mean[...] = np.linspace(-1.0, 1.0, c)
    bn.running_var[...] = np.linspace(0.5, 2.0, c)
    theirs = nn.Sequential(nn.BatchNorm1d(c, dtype=TORCH_DTYPE[dtype]), nn.ReLU()).eval()
    with torch.no_grad():
        for name in ("weight", "bias"):
            getattr(theirs[0], name).copy_(T(getattr(bn, name).data))
        theirs[0].running_mean.copy_(T(bn.running_mean))
        theirs[0].running_var.copy_(T(bn.running_var))
    m = fl.Sequential(bn, fl.ReLU())
    m.eval()
    x = np.array([SPECIAL, SPECIAL[::-1]], dtype)
    y = m(x)
    assert np.any(y == 0) and np.any(np.isnan(y)) and np.any(np.isinf(y))
    np.testing.assert_allclose(y, theirs(T(x)).detach().numpy(), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [fl.Softmax, fl.LogSoftmax])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax(backend_name, dtype, cls, dim):
    m = cls(dim=dim)
    compare_module(m, fl.to_torch(m), rnd((3, 4, 5), dtype, 4, scale=5), dtype, backend_name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_huge_logits(backend_name, dtype):
    x = rnd((4, 6), dtype, 5, scale=1e4)
    for ours, theirs in ((fl.Softmax(), nn.Softmax(dim=-1)), (fl.LogSoftmax(), nn.LogSoftmax(dim=-1))):
        y = ours(x)
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y, theirs(T(x)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_mlp(backend_name, dtype):
    fl.manual_seed(2)
    model = fl.Sequential(fl.Flatten(), fl.Linear(12, 16), fl.ReLU(), fl.Linear(16, 8), fl.Tanh(),
                          fl.Linear(8, 8), fl.LeakyReLU(0.05), fl.Linear(8, 6), fl.Sigmoid(),
                          fl.Linear(6, 4), fl.LogSoftmax()).to(dtype)
    compare_module(model, fl.to_torch(model), rnd((10, 3, 4), dtype, 6), dtype, backend_name)
    # and through a loss, the way training uses it
    x, y = rnd((10, 3, 4), dtype, 7), np.random.default_rng(7).integers(0, 4, 10)
    tm = fl.to_torch(model)
    loss_fn = fl.NLLLoss()
    model.zero_grad()
    value = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    tloss = nn.NLLLoss()(tm(T(x)), T(y))
    tloss.backward()
    np.testing.assert_allclose(value, tloss.item(), **tol(dtype))
    for (n, p), (_, tp) in zip(model.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **tol(dtype), err_msg=n)


# ---------------------------------------------------------------------------------------- losses

def loss_case(name, dtype, seed=0):
    r = np.random.default_rng(seed)
    n, c = 6, 5
    x = (r.standard_normal((n, c)) * 3).astype(dtype)
    labels = r.integers(0, c, n)
    if name == "CE-labels":
        return fl.CrossEntropyLoss, nn.CrossEntropyLoss, x, labels
    if name == "CE-probs":
        t = r.random((n, c))
        return fl.CrossEntropyLoss, nn.CrossEntropyLoss, x, (t / t.sum(1, keepdims=True)).astype(dtype)
    if name == "CE-huge":
        return fl.CrossEntropyLoss, nn.CrossEntropyLoss, x * dtype(3e3), labels
    if name == "NLL":
        logp = x - np.log(np.exp(x.astype(np.float64)).sum(1, keepdims=True)).astype(dtype)
        return fl.NLLLoss, nn.NLLLoss, logp, labels
    if name == "MSE":
        return fl.MSELoss, nn.MSELoss, x, r.standard_normal((n, c)).astype(dtype)
    if name == "BCE":
        p = r.uniform(0, 1, (n, c)).astype(dtype)
        p[0, :2] = [0, 1]
        return fl.BCELoss, nn.BCELoss, p, r.uniform(0, 1, (n, c)).astype(dtype)
    if name == "BCEWithLogits":
        return fl.BCEWithLogitsLoss, nn.BCEWithLogitsLoss, x * dtype(10), r.uniform(0, 1, (n, c)).astype(dtype)
    raise KeyError(name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["CE-labels", "CE-probs", "CE-huge", "NLL", "MSE", "BCE",
                                  "BCEWithLogits"])
def test_losses(backend_name, dtype, reduction, name):
    ours_cls, theirs_cls, x, t = loss_case(name, dtype)
    ours, theirs = ours_cls(reduction=reduction), theirs_cls(reduction=reduction)
    value = ours(x, t)
    xt = T(x, grad=True)
    tv = theirs(xt, T(t))
    tv.backward()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(value, tv.item(), rtol=rtol, atol=rtol)
    g = ours.backward()
    # At p = 0 or 1 BCE's gradient is (p - t) / max(p (1 - p), 1e-12); torch's 1e-12 is a float32
    # literal (relative difference 4e-9), so those clamped entries agree to 1e-8 only.
    grtol = max(rtol * 10, 1e-8) if name == "BCE" else rtol * 10
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=grtol, atol=rtol)
    # a scalar upstream gradient scales it, as torch's loss.backward(gradient)
    xt2 = T(x, grad=True)
    theirs(xt2, T(t)).backward(torch.tensor(0.5, dtype=TORCH_DTYPE[dtype]))
    ours(x, t)
    np.testing.assert_allclose(ours.backward(0.5), xt2.grad.numpy(), rtol=grtol, atol=rtol)


# ---------------------------------------------------------------------------------------- optimizers

OPTIMIZERS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.1, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.005)),
    ("RMSprop", dict(lr=0.005, centered=True)),
    ("RMSprop", dict(lr=0.005, momentum=0.8)),
    ("RMSprop", dict(lr=0.005, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.01)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.02)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, momentum_decay=1e-3, weight_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0)),
]
OPT_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in OPTIMIZERS]


SHAPES = [(3, 4), (4,), (2, 1, 3)]


def run_quadratic(ours_opt_factory, theirs_opt_factory, dtype, steps=100):
    """Minimise sum_k 0.5 * a_k (p_k - c_k)^2 over three parameters of different shapes (so the
    packed buffer holds several), with the same noise added to every step's gradient (as minibatch
    gradients vary). Each side computes its gradient from its own parameters."""
    r = np.random.default_rng(0)
    init = [r.standard_normal(s) for s in SHAPES]
    a = [r.uniform(0.5, 3.0, s) for s in SHAPES]
    c = [r.standard_normal(s) for s in SHAPES]
    ours = [fl.Parameter(v.astype(dtype)) for v in init]
    theirs = [T(v.astype(dtype), grad=True) for v in init]
    opt, topt = ours_opt_factory(ours), theirs_opt_factory(theirs)
    for _ in range(steps):
        noise = [0.3 * r.standard_normal(s) for s in SHAPES]
        opt.zero_grad()
        for p, ak, ck, nk in zip(ours, a, c, noise):
            p.grad += (ak * (p.data - ck) + nk).astype(dtype)
        opt.step()
        for tp, ak, ck, nk in zip(theirs, a, c, noise):
            tp.grad = T((ak * (tp.detach().numpy() - ck) + nk).astype(dtype))
        topt.step()
    start = sum(0.5 * np.sum(ak * (v - ck) ** 2) for v, ak, ck in zip(init, a, c))
    end = sum(0.5 * np.sum(ak * (p.data - ck) ** 2) for p, ak, ck in zip(ours, a, c))
    assert end < start
    return [p.data for p in ours], [tp.detach().numpy() for tp in theirs]


@pytest.fixture
def torch_scalar_float64():
    """torch keeps NAdam's mu_product as a scalar of the default dtype (float32 unless changed):
    with float64 as the default it is float64 and NAdam agrees to rounding, like the others."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=OPT_IDS)
def test_optimizer_trajectory(backend_name, torch_scalar_float64, dtype, name, kw):
    """100 steps of every optimizer and option against torch.optim, float64 and float32."""
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (1e-5, 2e-6)
    ours, theirs = run_quadratic(lambda p: getattr(fl, name)(p, **kw),
                                 lambda p: getattr(torch.optim, name)(p, **kw), dtype)
    for k, (p, tp) in enumerate(zip(ours, theirs)):
        assert p.dtype == np.dtype(dtype)
        np.testing.assert_allclose(p, tp, rtol=rtol, atol=atol, err_msg=f"parameter {k}")


@pytest.mark.parametrize("kw", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.05),
                                dict(lr=0.01, momentum_decay=0.02)])
def test_nadam_against_torch_float32_mu_product(kw):
    """With torch's default float32 mu_product the float64 trajectories agree to ~1e-6."""
    ours, theirs = run_quadratic(lambda p: fl.NAdam(p, **kw), lambda p: torch.optim.NAdam(p, **kw),
                                 np.float64)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p, tp, rtol=1e-6, atol=1e-7)


def mlp_trajectory(ours_opt_factory, theirs_opt_factory, dtype, steps=100):
    """The same, through a small model: Linear-Tanh-Linear and CrossEntropyLoss on fresh minibatches
    (gradients from each framework's own backward)."""
    fl.manual_seed(0)
    ours = fl.Sequential(fl.Linear(6, 8), fl.Tanh(), fl.Linear(8, 4)).to(dtype)
    theirs = fl.to_torch(ours)
    opt, topt = ours_opt_factory(ours.parameters()), theirs_opt_factory(theirs.parameters())
    r = np.random.default_rng(1)
    loss_fn, tloss_fn = fl.CrossEntropyLoss(), nn.CrossEntropyLoss()
    losses, tlosses = [], []
    for _ in range(steps):
        x, y = r.standard_normal((16, 6)).astype(dtype), r.integers(0, 4, 16)
        losses.append(loss_fn(ours(x), y))
        opt.zero_grad()
        ours.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tl = tloss_fn(theirs(T(x)), T(y))
        tl.backward()
        topt.step()
        tlosses.append(tl.item())
    return ours, theirs, np.array(losses), np.array(tlosses)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                     ("RMSprop", dict(lr=0.005, centered=True, momentum=0.5)),
                                     ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
                                     ("NAdam", dict(lr=0.01, weight_decay=0.01))])
def test_mlp_trajectory(torch_scalar_float64, dtype, name, kw):
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (1e-5, 2e-6)
    ours, theirs, losses, tlosses = mlp_trajectory(
        lambda p: getattr(fl, name)(p, **kw), lambda p: getattr(torch.optim, name)(p, **kw), dtype)
    np.testing.assert_allclose(losses, tlosses, rtol=rtol, atol=atol)
    for (n, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=rtol, atol=atol, err_msg=n)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_parameter_groups_trajectory(torch_scalar_float64, name):
    """Two groups with their own lr and weight decay, the second added with add_param_group, and an
    lr written into a group half way: 100 steps against torch.optim."""
    def groups(params):
        params = list(params)
        return [{"params": params[:2], "lr": 0.02}], {"params": params[2:], "lr": 0.005,
                                                      "weight_decay": 0.1}

    def make(module):
        def factory(params):
            first, second = groups(params)
            opt = getattr(module, name)(first, lr=0.01, weight_decay=0.01)
            opt.add_param_group(second)
            return opt
        return factory
    r = np.random.default_rng(0)
    init = [r.standard_normal(s) for s in SHAPES + [(5,)]]
    ours = [fl.Parameter(v.copy()) for v in init]
    theirs = [T(v.copy(), grad=True) for v in init]
    opt, topt = make(fl)(ours), make(torch.optim)(theirs)
    for step in range(100):
        if step == 50:
            opt.param_groups[0]["lr"] = topt.param_groups[0]["lr"] = 0.001
        grads = [r.standard_normal(v.shape) for v in init]
        for p, tp, g in zip(ours, theirs, grads):
            p.grad = g + p.data
            tp.grad = T(g + tp.detach().numpy())
        opt.step()
        topt.step()
    for k, (p, tp) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"parameter {k}")


def test_momentum_alias_matches_torch_sgd_momentum():
    ours, theirs = run_quadratic(lambda p: fl.Momentum(p),
                                 lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9), np.float64)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p, tp, rtol=1e-10, atol=1e-12)


def test_nadam_alias_matches_torch_nadam_defaults(torch_scalar_float64):
    ours, theirs = run_quadratic(lambda p: fl.Nadam(p), lambda p: torch.optim.NAdam(p), np.float64)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p, tp, rtol=1e-10, atol=1e-12)
