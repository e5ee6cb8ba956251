"""The Module contract: registration, traversal, modes, state dicts, dtype conversion, repr,
Sequential, the backend switch and seeding."""

import numpy as np
import pytest

import fastlayers as fl


class Block(fl.Module):
    """A module with parameters, a child, a buffer and an absent buffer."""

    def __init__(self):
        super().__init__()
        self.scale = fl.Parameter(np.ones(3, np.float32))
        self.inner = fl.Linear(3, 2)
        self.register_buffer("count", np.zeros(1, np.int64))
        self.register_buffer("stats", np.arange(3, dtype=np.float32))
        self.register_buffer("absent", None)
        self.shift = fl.Parameter(np.zeros(2, np.float32))


def model():
    fl.manual_seed(0)
    return fl.Sequential(fl.Linear(4, 5), fl.ReLU(), Block(), fl.Linear(2, 3, bias=False))


def snapshot(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


def assert_same_state(m, snap):
    now = m.state_dict()
    assert set(now) == set(snap)
    for k in snap:
        np.testing.assert_array_equal(now[k], snap[k], err_msg=k)


# ---------------------------------------------------------------------------------------- traversal

def test_named_parameters_order_and_names():
    m = model()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.scale", "2.shift", "2.inner.weight", "2.inner.bias",
                     "3.weight"]
    params = list(m.parameters())
    assert all(isinstance(p, fl.Parameter) for p in params)
    assert params[0] is m[0].weight and params[-1] is m[3].weight
    assert m[3].bias is None


def test_shared_parameter_is_listed_once():
    m = fl.Sequential(fl.Linear(3, 3), fl.Linear(3, 3))
    m[1].weight = m[0].weight
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias", "1.bias"]


def test_buffers_and_children():
    m = model()
    assert [n for n, _ in m.named_buffers()] == ["2.count", "2.stats"]
    assert [type(c).__name__ for c in m.children()] == ["Linear", "ReLU", "Block", "Linear"]
    block = m[2]
    assert [n for n, _ in block.named_children()] == ["inner"]
    assert set(m.state_dict()) == {n for n, _ in m.named_parameters()} | {"2.count", "2.stats"}
    # Reassigning a registered buffer keeps it registered.
    block.stats = np.full(3, 7, np.float32)
    np.testing.assert_array_equal(m.state_dict()["2.stats"], 7)
    with pytest.raises(TypeError, match="buffer"):
        block.register_buffer("bad", [1, 2])


def test_attribute_before_init_raises():
    class Bad(fl.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="Module.__init__"):
        Bad()


def test_reassigning_a_parameter_name_to_plain_value_unregisters_it():
    lin = fl.Linear(2, 2)
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]


def test_train_eval_recursive():
    m = model()
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    assert not m[2].inner.training
    m.train()
    assert all(mod.training for mod in m.modules())
    m[2].eval()
    assert m.training and not m[2].training and not m[2].inner.training
    with pytest.raises(TypeError, match="mode"):
        m.train("yes")


def test_zero_grad():
    m = model()
    for p in m.parameters():
        p.grad[...] = 3
    m.zero_grad()
    assert all(np.all(p.grad == 0) for p in m.parameters())


# ---------------------------------------------------------------------------------------- state

def test_state_dict_holds_copies():
    m = model()
    sd = m.state_dict()
    sd["0.weight"][...] = 123
    sd["2.stats"][...] = 123
    assert not np.any(m[0].weight.data == 123)
    assert not np.any(m[2].stats == 123)
    m[0].weight.data[...] = -5
    assert not np.any(sd["0.weight"] == -5)


def test_load_state_dict_round_trip_in_place():
    src, dst = model(), model()
    fl.manual_seed(9)
    src = fl.Sequential(fl.Linear(4, 5), fl.ReLU(), Block(), fl.Linear(2, 3, bias=False))
    src[2].stats[...] = [4, 5, 6]
    src[2].count[...] = 3
    w_obj = dst[0].weight.data
    stats_obj = dst[2].stats
    assert dst.load_state_dict(src.state_dict()) == ([], [])
    assert_same_state(dst, snapshot(src))
    assert dst[0].weight.data is w_obj            # written in place, not rebound
    assert dst[2].stats is stats_obj


def test_load_state_dict_values_are_what_the_optimizer_steps():
    m = model()
    opt = fl.SGD(m.parameters(), lr=0.1)
    target = {k: np.full_like(v, 0.25) for k, v in m.state_dict().items()}
    m.load_state_dict(target)
    # a step moves the loaded values
    for p in m.parameters():
        p.grad[...] = 1
    opt.step()
    np.testing.assert_allclose(m[0].weight.data, 0.15, rtol=1e-6)


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape", "nonnumeric"])
def test_load_state_dict_failure_leaves_module_unchanged(change):
    m = model()
    before = snapshot(m)
    sd = {k: v + 1 for k, v in m.state_dict().items()}      # every value would change
    if change == "missing":
        del sd["2.inner.bias"]
        err, match = KeyError, "2.inner.bias"
    elif change == "unexpected":
        sd["9.weight"] = np.zeros(3)
        err, match = KeyError, "9.weight"
    elif change == "shape":
        sd["3.weight"] = np.zeros((2, 3), np.float32)      # the last key: everything before is valid
        err, match = ValueError, "3.weight"
    else:
        sd["3.weight"] = np.full((3, 2), "a")
        err, match = TypeError, "3.weight"
    with pytest.raises(err, match=match):
        m.load_state_dict(sd)
    assert_same_state(m, before)


def test_load_state_dict_not_strict_reports_keys():
    m = model()
    sd = m.state_dict()
    del sd["0.bias"]
    sd["extra"] = np.zeros(1)
    sd["0.weight"] = np.zeros_like(sd["0.weight"])
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["0.bias"] and unexpected == ["extra"]
    assert np.all(m[0].weight.data == 0)


@pytest.mark.parametrize("how", ["to", "double", "float"])
def test_dtype_conversion(how):
    m = model()
    if how == "float":
        m.double()
        assert m.float() is m
        want = np.float32
    elif how == "double":
        assert m.double() is m
        want = np.float64
    else:
        assert m.to(np.float64) is m
        want = np.float64
    for p in m.parameters():
        assert p.data.dtype == want and p.grad.dtype == want
    assert m[2].stats.dtype == want
    assert m[2].count.dtype == np.int64               # integer buffers keep their dtype
    assert m.state_dict()["2.stats"].dtype == want
    y = m[0](np.ones((2, 4), want))
    assert y.dtype == want


def test_to_rejects_non_float_dtypes():
    m = model()
    with pytest.raises(TypeError, match="dtype"):
        m.to(np.int32)
    with pytest.raises(TypeError, match="dtype"):
        m.to(np.float16)


# ---------------------------------------------------------------------------------------- repr

def test_repr_text():
    m = fl.Sequential(fl.Linear(3, 4), fl.ReLU(), fl.Sequential(fl.LeakyReLU(0.2), fl.Softmax(dim=1)))
    assert repr(m) == (
        "Sequential(\n"
        "  (0): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): LeakyReLU(negative_slope=0.2)\n"
        "    (1): Softmax(dim=1)\n"
        "  )\n"
        ")")
    assert repr(fl.Linear(2, 1, bias=False)) == "Linear(in_features=2, out_features=1, bias=False)"
    assert repr(fl.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert "reduction='sum'" in repr(fl.MSELoss(reduction="sum"))


# ---------------------------------------------------------------------------------------- Sequential

def test_sequential_container():
    a, b, c = fl.Linear(2, 3), fl.Tanh(), fl.Linear(3, 1)
    s = fl.Sequential(a, b)
    assert len(s) == 2
    assert s.append(c) is s
    assert len(s) == 3
    assert list(s) == [a, b, c]
    assert s[0] is a and s[-1] is c and s[-3] is a
    sub = s[1:]
    assert isinstance(sub, fl.Sequential) and list(sub) == [b, c]
    assert list(s[::-1]) == [c, b, a]
    assert len(s[5:]) == 0
    with pytest.raises(IndexError):
        s[3]
    with pytest.raises(IndexError):
        s[-4]
    with pytest.raises(TypeError):
        s["0"]
    with pytest.raises(TypeError):
        s[True]
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    y = s(np.ones((4, 2), np.float32))
    assert y.shape == (4, 1)


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="Module"):
        fl.Sequential(fl.ReLU(), np.tanh)
    s = fl.Sequential()
    with pytest.raises(TypeError, match="Module"):
        s.append("relu")
    assert len(s) == 0


@pytest.mark.parametrize("module,args", [
    (fl.Linear(3, 2), (np.ones((1, 3), np.float32),)),
    (fl.Sequential(fl.Linear(3, 2), fl.ReLU()), (np.ones((1, 3), np.float32),)),
    (fl.ReLU(), (np.ones(3, np.float32),)),
    (fl.Sigmoid(), (np.ones(3, np.float32),)),
    (fl.Softmax(), (np.ones((1, 3), np.float32),)),
    (fl.LogSoftmax(), (np.ones((1, 3), np.float32),)),
    (fl.Flatten(), (np.ones((1, 3), np.float32),)),
])
def test_backward_before_forward_raises(module, args):
    with pytest.raises(RuntimeError, match="before forward"):
        module.backward(np.ones((1, 2), np.float32))
    module(*args)                        # and after a forward it works
    out = module(*args)
    assert module.backward(np.ones_like(out)) is not None


@pytest.mark.parametrize("loss", [fl.MSELoss(), fl.BCELoss(), fl.BCEWithLogitsLoss(),
                                  fl.CrossEntropyLoss(), fl.NLLLoss(), fl.CrossEntropy()])
def test_loss_backward_before_forward_raises(loss):
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()


def test_needs_input_grad_false_returns_none_but_fills_parameter_grads(backend_name):
    fl.manual_seed(1)
    lin = fl.Linear(3, 2)
    lin.needs_input_grad = False
    lin(np.ones((4, 3), np.float32))
    assert lin.backward(np.ones((4, 2), np.float32)) is None
    np.testing.assert_allclose(lin.weight.grad, 4.0)
    np.testing.assert_allclose(lin.bias.grad, 4.0)
    m = fl.Sequential(fl.Linear(3, 5), fl.ReLU(), fl.Linear(5, 2))
    m[0].needs_input_grad = False
    m(np.ones((4, 3), np.float32))
    assert m.backward(np.ones((4, 2), np.float32)) is None
    assert np.any(m[0].weight.grad != 0)


# ---------------------------------------------------------------------------------------- backend

def test_backend_switch_and_context_manager():
    assert fl.get_backend() == "numba"
    fl.set_backend("numpy")
    try:
        assert fl.get_backend() == "numpy"
        with fl.use_backend("numba"):
            assert fl.get_backend() == "numba"
            with fl.use_backend("numpy"):
                assert fl.get_backend() == "numpy"
            assert fl.get_backend() == "numba"
        assert fl.get_backend() == "numpy"
    finally:
        fl.set_backend("numba")
    with pytest.raises(ValueError, match="backend"):
        fl.set_backend("cupy")
    assert fl.get_backend() == "numba"


def test_use_backend_restores_on_exception():
    with pytest.raises(ZeroDivisionError):
        with fl.use_backend("numpy"):
            assert fl.get_backend() == "numpy"
            1 / 0
    assert fl.get_backend() == "numba"
    with pytest.raises(ValueError):
        with fl.use_backend("nope"):
            pass
    assert fl.get_backend() == "numba"


def test_backend_really_changes_the_implementation(monkeypatch):
    import kernels
    calls = []
    ns = kernels.backend("numpy")
    real = ns.softmax_forward
    monkeypatch.setattr(ns, "softmax_forward", lambda x: calls.append(1) or real(x))
    with fl.use_backend("numpy"):
        fl.Softmax()(np.ones((2, 3)))
    fl.Softmax()(np.ones((2, 3)))
    assert calls == [1]


# ---------------------------------------------------------------------------------------- init, seed

def test_manual_seed_reproducible_init():
    fl.manual_seed(42)
    a = fl.Sequential(fl.Linear(5, 4), fl.Linear(4, 3))
    fl.manual_seed(42)
    b = fl.Sequential(fl.Linear(5, 4), fl.Linear(4, 3))
    fl.manual_seed(43)
    c = fl.Sequential(fl.Linear(5, 4), fl.Linear(4, 3))
    for (n, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(),
                                         c.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=n)
        assert not np.array_equal(pa.data, pc.data)
    with pytest.raises(ValueError, match="seed"):
        fl.manual_seed(-1)
    with pytest.raises(ValueError, match="seed"):
        fl.manual_seed(1.5)


def test_float32_in_float32_out_and_float64_works(backend_name):
    fl.manual_seed(0)
    m = fl.Sequential(fl.Linear(4, 6), fl.Tanh(), fl.Linear(6, 3), fl.LogSoftmax())
    y = m(np.ones((2, 4), np.float32))
    assert y.dtype == np.float32
    assert m.backward(np.ones_like(y)).dtype == np.float32
    m.double()
    y64 = m(np.ones((2, 4)))
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y, rtol=1e-5)
    assert m.backward(np.ones_like(y64)).dtype == np.float64
    lin = fl.Linear(3, 2, dtype=np.float64)
    assert lin.weight.dtype == np.float64 and lin(np.ones(3)).dtype == np.float64


def test_parameter_wraps_arrays():
    p = fl.Parameter(np.asfortranarray(np.ones((3, 2))))
    assert p.data.flags.c_contiguous and p.grad.shape == (3, 2) and np.all(p.grad == 0)
    assert p.shape == (3, 2) and p.size == 6 and p.dtype == np.float64
    with pytest.raises(TypeError, match="ndarray"):
        fl.Parameter([1.0, 2.0])
    with pytest.raises(TypeError, match="dtype"):
        fl.Parameter(np.ones(3, np.int32))


class _Raiser(fl.Module):
    """Identity, or a ValueError when ``fail`` is set (a layer whose input check fails)."""

    fail = False

    def forward(self, x):
        if self.fail:
            raise ValueError("bad input")
        self._cache = True
        return x

    def backward(self, grad_output):
        self._saved()
        return grad_output


@pytest.mark.parametrize("nested", [False, True])
def test_failed_forward_after_fused_steps_keeps_the_last_good_caches(nested):
    # The fused steps run (and cache) before the failing layer; the backward must still see the
    # last good forward, as in a twin that never ran the failed one.
    def build():
        fl.manual_seed(0)
        head = [fl.Linear(4, 3), fl.ReLU(), fl.Linear(3, 3), fl.Tanh()]
        body = [fl.Sequential(*head)] if nested else head
        return fl.Sequential(*body, _Raiser())
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((5, 4)).astype(np.float32) for _ in range(2))
    g = rng.standard_normal((5, 3)).astype(np.float32)
    model, twin = build(), build()
    model(x1)
    twin(x1)
    model[-1].fail = True
    with pytest.raises(ValueError, match="bad input"):
        model(x2)
    model[-1].fail = False
    np.testing.assert_array_equal(model.backward(g), twin.backward(g))
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_fused_steps_are_taken_again_only_while_they_apply():
    lin, act = fl.Linear(3, 3), fl.ReLU()
    model = fl.Sequential(lin, act, lin, act)      # one module twice: two steps, never one shared
    x = np.ones((2, 3), np.float32)
    model(x)
    first = list(model._steps)
    assert len(first) == 2 and first[0] is not first[1]
    model(x)
    assert [a is b for a, b in zip(model._steps, first)] == [True, True]   # each taken once
    ident = fl.Identity()
    setattr(model, "1", ident)                     # the first pair no longer fuses
    model(x)
    assert model.steps == [(lin,), (ident,), (lin, act)]
    assert model._steps[2] is first[1]
