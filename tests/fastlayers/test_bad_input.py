"""Bad inputs: each raises the right exception type, with a message naming the argument, and leaves
parameters, gradients and optimizer state exactly as they were."""
import numpy as np
import pytest

import fastlayers as fl


class Ctx:
    """A small model after one Adam step: non-zero parameters, gradients and optimizer state."""

    def __init__(self, dtype=np.float32):
        fl.manual_seed(0)
        self.model = fl.Sequential(fl.Linear(4, 3), fl.ReLU(), fl.Linear(3, 2))
        self.opt = fl.Adam(self.model.parameters(), lr=0.01)
        r = np.random.default_rng(0)
        self.x = r.standard_normal((5, 4)).astype(dtype)
        self.y = r.integers(0, 2, 5)
        self.loss = fl.CrossEntropyLoss()
        self.loss(self.model(self.x), self.y)
        self.opt.zero_grad()
        self.model.backward(self.loss.backward())
        self.opt.step()
        # leave gradients non-zero and a forward cached, as in the middle of training
        self.out = self.model(self.x)
        self.loss(self.out, self.y)
        self.model.backward(self.loss.backward())

    def snapshot(self):
        return dict(params={n: p.data.copy() for n, p in self.model.named_parameters()},
                    grads={n: p.grad.copy() for n, p in self.model.named_parameters()},
                    opt=self.opt.state_dict(), flat=self.opt.flat, flat_grad=self.opt.flat_grad,
                    loss_grad=self.loss.backward().copy())

    def assert_unchanged(self, snap):
        for n, p in self.model.named_parameters():
            np.testing.assert_array_equal(p.data, snap["params"][n], err_msg=n)
            np.testing.assert_array_equal(p.grad, snap["grads"][n], err_msg=n)
            assert np.shares_memory(p.data, self.opt.flat), f"{n} no longer packed"
            assert np.shares_memory(p.grad, self.opt.flat_grad), f"{n} grad no longer packed"
        assert self.opt.flat is snap["flat"] and self.opt.flat_grad is snap["flat_grad"]
        now = self.opt.state_dict()
        assert set(now) == set(snap["opt"])
        for k in now:
            np.testing.assert_array_equal(now[k], snap["opt"][k], err_msg=k)
        np.testing.assert_array_equal(self.loss.backward(), snap["loss_grad"])
        # and the model still trains exactly like an untouched twin
        twin = Ctx()
        for m in (self, twin):
            m.opt.zero_grad()
            m.loss(m.model(m.x), m.y)
            m.model.backward(m.loss.backward())
            m.opt.step()
        for (n, p), (_, q) in zip(self.model.named_parameters(), twin.model.named_parameters()):
            np.testing.assert_array_equal(p.data, q.data, err_msg=n)


def params(c):
    return list(c.model.parameters())


N, F = 5, 4
f32 = np.float32

# (id, call(ctx), exception type, regex the message must match[, xfail reason])
CASES = [
    # ---- layer inputs
    ("linear-scalar", lambda c: c.model(np.array(1.0, f32)), ValueError, "input"),
    ("linear-features", lambda c: c.model(np.ones((N, 5), f32)), ValueError, "input.*4 features"),
    ("linear-features-1d", lambda c: c.model[0](np.ones(3, f32)), ValueError, "input"),
    ("linear-int", lambda c: c.model(np.ones((N, F), np.int64)), TypeError, "input.*dtype"),
    ("linear-float16", lambda c: c.model(np.ones((N, F), np.float16)), TypeError, "input.*dtype"),
    ("linear-dtype-mismatch", lambda c: c.model(np.ones((N, F))), TypeError, "input.*float64.*float32"),
    ("linear-list", lambda c: c.model([[1.0] * F]), TypeError, "input.*ndarray"),
    ("relu-int", lambda c: fl.ReLU()(np.ones(3, np.int32)), TypeError, "input"),
    ("tanh-float16", lambda c: fl.Tanh()(np.ones(3, np.float16)), TypeError, "input"),
    ("softmax-dim", lambda c: fl.Softmax(dim=2)(np.ones((2, 3), f32)), ValueError, "dim"),
    ("softmax-scalar", lambda c: fl.LogSoftmax()(np.array(1.0)), ValueError, "input"),
    ("linear1-scalar", lambda c: fl.Linear(1, 3)(np.array(1.0, f32)), ValueError, "input"),
    ("softmax-int", lambda c: fl.Softmax()(np.ones((2, 3), int)), TypeError, "input"),
    ("flatten-list", lambda c: fl.Flatten()([1, 2]), TypeError, "input"),
    ("flatten-range", lambda c: fl.Flatten(2, 1)(np.ones((2, 3, 4))), ValueError, "start_dim"),
    # ---- backward inputs (after a good forward)
    ("linear-grad-shape", lambda c: c.model.backward(np.ones((N, 3), f32)), ValueError, "grad_output"),
    ("linear-grad-dtype", lambda c: c.model.backward(np.ones((N, 2))), TypeError, "grad_output"),
    ("linear-grad-int", lambda c: c.model[2].backward(np.ones((N, 2), int)), TypeError, "grad_output"),
    ("softmax-grad-shape", lambda c: _after(fl.Softmax(), (2, 3)).backward(np.ones((3, 2), f32)),
     ValueError, "grad_output"),
    # ---- loss inputs
    ("ce-1d", lambda c: c.loss(np.ones(2, f32), np.zeros(2, int)), ValueError, "input.*2-D"),
    ("ce-3d", lambda c: c.loss(np.ones((N, 2, 1), f32), c.y), ValueError, "input.*2-D"),
    ("ce-int-input", lambda c: c.loss(np.ones((N, 2), int), c.y), TypeError, "input"),
    ("ce-label-negative", lambda c: c.loss(c.out, np.array([0, 1, -1, 0, 1])), ValueError, "target.*-1"),
    ("ce-label-too-big", lambda c: c.loss(c.out, np.array([0, 1, 2, 0, 1])), ValueError, "target.*2"),
    ("ce-label-float", lambda c: c.loss(c.out, c.y.astype(f32)), (TypeError, ValueError), "target"),
    ("ce-label-bool", lambda c: c.loss(c.out, c.y.astype(bool)), TypeError, "target"),
    ("ce-label-shape-2d", lambda c: c.loss(c.out, c.y[:, None]), ValueError, "target"),
    ("ce-label-shape-long", lambda c: c.loss(c.out, np.zeros(N + 1, int)), ValueError, "target"),
    ("ce-label-list", lambda c: c.loss(c.out, [0, 1, 0, 1, 0]), TypeError, "target"),
    ("ce-probs-shape", lambda c: c.loss(c.out, np.full((N, 3), 1 / 3, f32)), ValueError, "target"),
    ("ce-probs-dtype", lambda c: c.loss(c.out, np.full((N, 2), 0.5)), TypeError, "target"),
    ("ce-probs-float16", lambda c: c.loss(c.out, np.full((N, 2), 0.5, np.float16)), TypeError, "target"),
    ("nll-float-labels", lambda c: fl.NLLLoss()(c.out, c.y.astype(f32)), TypeError, "target"),
    ("nll-out-of-range", lambda c: fl.NLLLoss()(c.out, np.full(N, 7)), ValueError, "target.*7"),
    ("nll-1d", lambda c: fl.NLLLoss()(np.ones(3, f32), np.zeros(3, int)), ValueError, "input"),
    ("mse-shape", lambda c: fl.MSELoss()(np.ones((3, 4)), np.ones((4, 3))), ValueError, "target.*shape"),
    ("mse-dtype", lambda c: fl.MSELoss()(np.ones(3, f32), np.ones(3)), TypeError, "target"),
    ("mse-int-target", lambda c: fl.MSELoss()(np.ones(3), np.ones(3, int)), TypeError, "target"),
    ("mse-int-input", lambda c: fl.MSELoss()(np.ones(3, int), np.ones(3)), TypeError, "input"),
    ("bce-above-one", lambda c: fl.BCELoss()(np.array([0.5, 1.5]), np.ones(2)), ValueError, "input"),
    ("bce-negative", lambda c: fl.BCELoss()(np.array([-0.1, 0.5]), np.ones(2)), ValueError, "input"),
    ("bce-shape", lambda c: fl.BCELoss()(np.full(3, 0.5), np.ones(2)), ValueError, "target"),
    ("bcelogits-shape", lambda c: fl.BCEWithLogitsLoss()(np.ones((2, 2)), np.ones(4)), ValueError,
     "target"),
    ("crossentropy-not-probs", lambda c: fl.CrossEntropy()(np.array([[2.0, -1.0]]), np.array([0])),
     ValueError, "input"),
    ("crossentropy-label", lambda c: fl.CrossEntropy()(np.array([[0.5, 0.5]]), np.array([2])),
     ValueError, "target"),
    # ---- constructors
    ("linear-zero-in", lambda c: fl.Linear(0, 3), ValueError, "in_features"),
    ("linear-negative-out", lambda c: fl.Linear(3, -2), ValueError, "out_features"),
    ("linear-zero-out", lambda c: fl.Linear(3, 0), ValueError, "out_features"),
    ("linear-float-size", lambda c: fl.Linear(3.0, 2), TypeError, "in_features"),
    ("linear-bool-size", lambda c: fl.Linear(3, True), TypeError, "out_features"),
    ("linear-str-size", lambda c: fl.Linear("3", 2), TypeError, "in_features"),
    ("linear-bias-type", lambda c: fl.Linear(3, 2, bias="yes"), TypeError, "bias"),
    ("linear-int-dtype", lambda c: fl.Linear(3, 2, dtype=np.int32), TypeError, "dtype"),
    ("linear-half-dtype", lambda c: fl.Linear(3, 2, dtype=np.float16), TypeError, "dtype"),
    ("leaky-zero-slope", lambda c: fl.LeakyReLU(0.0), ValueError, "negative_slope"),
    ("leaky-negative-slope", lambda c: fl.LeakyReLU(-0.1), ValueError, "negative_slope"),
    ("leaky-str-slope", lambda c: fl.LeakyReLU("0.1"), TypeError, "negative_slope"),
    ("softmax-float-dim", lambda c: fl.Softmax(dim=1.0), TypeError, "dim"),
    ("flatten-str", lambda c: fl.Flatten(start_dim="1"), TypeError, "start_dim"),
    ("reduction-name", lambda c: fl.MSELoss(reduction="avg"), ValueError, "reduction"),
    ("reduction-none", lambda c: fl.CrossEntropyLoss(reduction="none"), ValueError, "reduction"),
    ("reduction-nll", lambda c: fl.NLLLoss(reduction="Mean"), ValueError, "reduction"),
    ("reduction-bce", lambda c: fl.BCELoss(reduction=None), ValueError, "reduction"),
    ("crossentropy-eps", lambda c: fl.CrossEntropy(eps=0.0), ValueError, "eps"),
    ("sequential-non-module", lambda c: fl.Sequential(fl.Linear(2, 2), np.tanh), TypeError, "Module"),
    ("sequential-append", lambda c: c.model.append(3), TypeError, "Module"),
    ("backend-name", lambda c: fl.set_backend("torch"), ValueError, "backend"),
    ("seed-negative", lambda c: fl.manual_seed(-3), ValueError, "seed"),
    # ---- optimizers over the model's (already packed) parameters
    ("sgd-lr-zero", lambda c: fl.SGD(params(c), lr=0.0), ValueError, "lr"),
    ("sgd-lr-negative", lambda c: fl.SGD(params(c), lr=-0.1), ValueError, "lr"),
    ("sgd-lr-str", lambda c: fl.SGD(params(c), lr="0.1"), TypeError, "lr"),
    ("sgd-lr-nan", lambda c: fl.SGD(params(c), lr=float("nan")), (TypeError, ValueError), "lr"),
    ("sgd-momentum", lambda c: fl.SGD(params(c), lr=0.1, momentum=-0.9), ValueError, "momentum"),
    ("sgd-weight-decay", lambda c: fl.SGD(params(c), lr=0.1, weight_decay=-1e-4), ValueError,
     "weight_decay"),
    ("sgd-nesterov-no-momentum", lambda c: fl.SGD(params(c), lr=0.1, nesterov=True), ValueError,
     "nesterov"),
    ("sgd-nesterov-dampening", lambda c: fl.SGD(params(c), lr=0.1, momentum=0.9, dampening=0.1,
                                                nesterov=True), ValueError, "nesterov"),
    ("momentum-negative", lambda c: fl.Momentum(params(c), momentum=-1.0), ValueError, "momentum"),
    ("adam-beta1-one", lambda c: fl.Adam(params(c), betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    ("adam-beta2-one", lambda c: fl.Adam(params(c), betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    ("adam-beta-negative", lambda c: fl.Adam(params(c), betas=(-0.1, 0.9)), ValueError, "betas"),
    ("adam-betas-scalar", lambda c: fl.Adam(params(c), betas=0.9), TypeError, "betas"),
    ("adam-eps", lambda c: fl.Adam(params(c), eps=-1e-8), ValueError, "eps"),
    ("adam-weight-decay", lambda c: fl.Adam(params(c), weight_decay=-0.1), ValueError, "weight_decay"),
    ("adam-lr", lambda c: fl.Adam(params(c), lr=0), ValueError, "lr"),
    ("rmsprop-alpha", lambda c: fl.RMSprop(params(c), alpha=1.5), ValueError, "alpha"),
    ("rmsprop-eps", lambda c: fl.RMSprop(params(c), eps=-1.0), ValueError, "eps"),
    ("rmsprop-momentum", lambda c: fl.RMSprop(params(c), momentum=-0.1), ValueError, "momentum"),
    ("rmsprop-weight-decay", lambda c: fl.RMSprop(params(c), weight_decay=-1.0), ValueError,
     "weight_decay"),
    ("nadam-betas", lambda c: fl.NAdam(params(c), betas=(0.9, 1.5)), ValueError, "betas"),
    ("nadam-momentum-decay", lambda c: fl.NAdam(params(c), momentum_decay=-0.1), ValueError,
     "momentum_decay"),
    ("nadam-eps", lambda c: fl.Nadam(params(c), eps=-1.0), ValueError, "eps"),
    ("optim-empty", lambda c: fl.SGD([], lr=0.1), ValueError, "empty"),
    ("optim-empty-generator", lambda c: fl.Adam(p for p in []), ValueError, "empty"),
    ("optim-non-parameter", lambda c: fl.SGD(params(c) + [np.zeros(3, f32)], lr=0.1), TypeError,
     "Parameter"),
    ("optim-module", lambda c: fl.Adam([c.model]), TypeError, "Parameter"),
    ("optim-mixed-dtypes", lambda c: fl.SGD(params(c) + [fl.Parameter(np.zeros(3))], lr=0.1),
     TypeError, "dtype"),
    ("optim-duplicate", lambda c: fl.SGD(params(c) + params(c)[:1], lr=0.1), ValueError, "more than once"),
]


def _after(module, shape):
    module(np.ones(shape, f32))
    return module


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case[4])] if len(case) > 4 else []
        yield pytest.param(*case[1:4], id=case[0], marks=marks)


@pytest.mark.parametrize("call,exc,match", list(_params()))
def test_bad_input_raises_and_leaves_state_untouched(backend_name, call, exc, match):
    ctx = Ctx()
    snap = ctx.snapshot()
    try:
        with pytest.raises(exc, match=match):
            call(ctx)
    finally:
        fl.set_backend(backend_name)      # the "backend-name" case must not switch anything
    assert fl.get_backend() == backend_name
    ctx.assert_unchanged(snap)


def test_elementwise_backward_shape_message_names_grad_output():
    relu = _after(fl.ReLU(), (2, 3))
    with pytest.raises(ValueError, match="grad_output"):
        relu.backward(np.ones((3, 2), f32))


def test_elementwise_backward_bad_shape_raises_value_error():
    for act in (fl.ReLU(), fl.LeakyReLU(), fl.Sigmoid(), fl.Tanh()):
        _after(act, (2, 3))
        with pytest.raises(ValueError, match="shape"):
            act.backward(np.ones((3, 2), f32))
        with pytest.raises(TypeError, match="grad_output"):
            act.backward(np.ones((2, 3)))


def test_failed_optimizer_constructor_does_not_repack():
    """A constructor that fails on a later parameter must not have re-homed the earlier ones."""
    ctx = Ctx()
    fresh = fl.Linear(2, 2)
    data_obj = fresh.weight.data
    with pytest.raises(TypeError):
        fl.SGD([fresh.weight, fresh.bias, fl.Parameter(np.zeros(2))], lr=0.1)
    assert fresh.weight.data is data_obj
    with pytest.raises(ValueError):
        fl.SGD(list(fresh.parameters()) + params(ctx), lr=-1)
    assert fresh.weight.data is data_obj
