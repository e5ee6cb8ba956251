"""Bad inputs: each raises the right exception type, with a message naming the argument, and leaves
parameters, gradients and optimizer state exactly as they were."""
import numpy as np
import pytest

import fastlayers as fl
from fastlayers import random
from tests.fastlayers.state import fingerprint


class Ctx:
    """A small model (with batch norm and dropout) after one Adam step, with non-zero parameters,
    gradients and optimizer state, and a forward (model and loss) cached for the next backward, as
    in the middle of training."""

    def __init__(self, dtype=np.float32):
        fl.manual_seed(0)
        self.model = fl.Sequential(fl.Linear(4, 3), fl.BatchNorm1d(3), fl.ReLU(), fl.Dropout(0.3),
                                   fl.Linear(3, 2))
        self.opt = fl.Adam(self.model.parameters(), lr=0.01)
        r = np.random.default_rng(0)
        self.x = r.standard_normal((5, 4)).astype(dtype)
        self.y = r.integers(0, 2, 5)
        self.loss = fl.CrossEntropyLoss()
        self.extra = None           # a module a case builds in its preparation
        self.loss(self.model(self.x), self.y)
        self.opt.zero_grad()
        self.model.backward(self.loss.backward())
        self.opt.step()
        self.out = self.model(self.x)
        self.loss(self.out, self.y)

    def fingerprint(self):
        return fingerprint(self.model, self.opt, self.loss, self.extra)

    def assert_trains_like_a_twin(self, prepare=None):
        """One more training step gives exactly the weights an untouched twin (given the same
        preparation) gets."""
        twin = Ctx()
        if prepare is not None:
            prepare(twin)
        start = random.get_state()       # both steps draw the same dropout mask
        for m in (self, twin):
            random.set_state(start)
            m.opt.zero_grad()
            m.loss(m.model(m.x), m.y)
            m.model.backward(m.loss.backward())
            m.opt.step()
        for (n, p), (_, q) in zip(self.model.named_parameters(), twin.model.named_parameters()):
            np.testing.assert_array_equal(p.data, q.data, err_msg=n)


class Prep:
    """A case that first makes a good call (``prepare``, not part of the comparison) and then the
    bad one (``call``)."""

    def __init__(self, prepare, call):
        self.prepare, self.call = prepare, call


def params(c):
    return list(c.model.parameters())


def _extra(cls, *args):
    def prepare(c):
        c.extra = cls(*args)
    return prepare


def _append_bad_head(c):
    c.model.append(fl.Linear(5, 2))


_append_bad_head.breaks_training = True


def _set_group(**hyper):
    def prepare(c):
        c.opt.param_groups[0].update(hyper)
    prepare.breaks_training = True
    return prepare


def _rebind_last_to_shape(c):
    p = c.model[4].bias
    p.data = np.zeros(7, f32)
    p.grad = np.ones(7, f32)


_rebind_last_to_shape.breaks_training = True


def _linear_forward_backward(c):
    c.extra = fl.Linear(4, 3)
    c.extra(c.x[:2])
    c.extra.backward(np.ones((2, 3), f32))


def _flattened(c):
    c.extra = fl.Flatten()
    c.extra(np.ones((2, 3, 4), f32))


def _cnn_with_bad_head(c):
    """The cnn's fused blocks (first-layer conv block, batch norm + ReLU + pool), a dropout, then a
    head with the wrong number of input features; one good forward first."""
    c.extra = fl.Sequential(fl.Conv2d(1, 4, 3, padding=1), fl.BatchNorm2d(4), fl.ReLU(),
                            fl.MaxPool2d(2), fl.Conv2d(4, 4, 3, padding=1), fl.BatchNorm2d(4),
                            fl.ReLU(), fl.MaxPool2d(2), fl.Dropout(0.5), fl.Flatten(),
                            fl.Linear(16, 2))
    c.extra[0].needs_input_grad = False
    c.extra(np.ones((4, 1, 8, 8), f32))
    c.extra.append(fl.Linear(3, 2))


def _fused_gelu_3d(c):
    """Linear + GELU (a fused step, its backward reading the pre-activation) after one good
    forward on (N, T, D) input."""
    c.extra = fl.Sequential(fl.Linear(4, 3), fl.GELU())
    c.extra(np.ones((2, 5, 4), f32))


def _opt_sd(c, index, **entry):
    sd = c.opt.state_dict()
    sd["state"][index].update(entry)
    return sd


def _opt_sd_index(c, index):
    sd = c.opt.state_dict()
    sd["state"][index] = sd["state"][0]
    return sd


def _opt_sd_group(c, **group):
    sd = c.opt.state_dict()
    sd["param_groups"][0].update(group)
    return sd


def _mod_sd(c, key, value):
    sd = c.model.state_dict()
    sd[key] = value
    return sd


N, F = 5, 4
f32 = np.float32

# (id, call(ctx), exception type, regex the message must match[, xfail reason])
CASES = [
    # ---- layer inputs
    ("linear-scalar", lambda c: c.model(np.array(1.0, f32)), ValueError, "input"),
    ("linear-features", lambda c: c.model(np.ones((N, 5), f32)), ValueError, "input.*4 features"),
    ("linear-features-1d", lambda c: c.model[0](np.ones(3, f32)), ValueError, "input.*4 features"),
    ("linear-int", lambda c: c.model(np.ones((N, F), np.int64)), TypeError, "input.*dtype"),
    ("linear-float16", lambda c: c.model(np.ones((N, F), np.float16)), TypeError, "input.*dtype"),
    ("linear-dtype-mismatch", lambda c: c.model(np.ones((N, F))), TypeError, "input.*float64.*float32"),
    ("linear-list", lambda c: c.model([[1.0] * F]), TypeError, "input.*ndarray"),
    ("relu-int", lambda c: fl.ReLU()(np.ones(3, np.int32)), TypeError, "input"),
    ("tanh-float16", lambda c: fl.Tanh()(np.ones(3, np.float16)), TypeError, "input"),
    ("softmax-dim", lambda c: fl.Softmax(dim=2)(np.ones((2, 3), f32)), ValueError, "dim"),
    ("softmax-scalar", lambda c: fl.LogSoftmax()(np.array(1.0)), ValueError, "input"),
    ("linear1-scalar", Prep(_extra(fl.Linear, 1, 3), lambda c: c.extra(np.array(1.0, f32))),
     ValueError, "input"),
    ("softmax-int", lambda c: fl.Softmax()(np.ones((2, 3), int)), TypeError, "input"),
    ("flatten-list", lambda c: fl.Flatten()([1, 2]), TypeError, "input"),
    ("flatten-range", lambda c: fl.Flatten(2, 1)(np.ones((2, 3, 4))), ValueError, "start_dim"),
    # ---- backward inputs (after a good forward)
    ("linear-grad-shape", lambda c: c.model.backward(np.ones((N, 3), f32)), ValueError, "grad_output"),
    ("linear-grad-dtype", lambda c: c.model.backward(np.ones((N, 2))), TypeError, "grad_output"),
    ("linear-grad-int", lambda c: c.model[4].backward(np.ones((N, 2), int)), TypeError, "grad_output"),
    ("softmax-grad-shape", lambda c: _after(fl.Softmax(), (2, 3)).backward(np.ones((3, 2), f32)),
     ValueError, "grad_output"),
    # ---- loss inputs
    ("ce-1d", lambda c: c.loss(np.ones(2, f32), np.zeros(2, int)), ValueError,
     r"target.*shape \(\)"),
    ("ce-3d", lambda c: c.loss(np.ones((N, 2, 1), f32), c.y), ValueError, r"target.*\(5, 1\)"),
    ("ce-int-input", lambda c: c.loss(np.ones((N, 2), int), c.y), TypeError, "input"),
    ("ce-label-negative", lambda c: c.loss(c.out, np.array([0, 1, -1, 0, 1])), ValueError, "target.*-1"),
    ("ce-label-too-big", lambda c: c.loss(c.out, np.array([0, 1, 2, 0, 1])), ValueError, "target.*2"),
    ("ce-label-float", lambda c: c.loss(c.out, c.y.astype(f32)), TypeError, "target.*integer"),
    ("ce-label-bool", lambda c: c.loss(c.out, c.y.astype(bool)), TypeError, "target"),
    ("ce-label-shape-2d", lambda c: c.loss(c.out, c.y[:, None]), ValueError, "target"),
    ("ce-label-shape-long", lambda c: c.loss(c.out, np.zeros(N + 1, int)), ValueError, "target"),
    ("ce-label-list", lambda c: c.loss(c.out, [0, 1, 0, 1, 0]), TypeError, "target"),
    ("ce-probs-shape", lambda c: c.loss(c.out, np.full((N, 3), 1 / 3, f32)), ValueError, "target"),
    ("ce-probs-dtype", lambda c: c.loss(c.out, np.full((N, 2), 0.5)), TypeError, "target"),
    ("ce-probs-float16", lambda c: c.loss(c.out, np.full((N, 2), 0.5, np.float16)), TypeError, "target"),
    ("nll-float-labels", lambda c: fl.NLLLoss()(c.out, c.y.astype(f32)), TypeError, "target"),
    ("nll-out-of-range", lambda c: fl.NLLLoss()(c.out, np.full(N, 7)), ValueError, "target.*7"),
    ("nll-1d", lambda c: fl.NLLLoss()(np.ones(3, f32), np.zeros(3, int)), ValueError,
     r"target.*shape \(\)"),
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
    ("reduction-none", lambda c: fl.CrossEntropyLoss(reduction="None"), ValueError, "reduction"),
    ("reduction-nll", lambda c: fl.NLLLoss(reduction="Mean"), ValueError, "reduction"),
    ("reduction-bce", lambda c: fl.BCELoss(reduction=None), ValueError, "reduction"),
    ("crossentropy-eps", lambda c: fl.CrossEntropy(eps=0.0), ValueError, "eps"),
    ("sequential-non-module", Prep(_extra(fl.Linear, 2, 2), lambda c: fl.Sequential(c.extra, np.tanh)),
     TypeError, "Module"),
    ("sequential-append", lambda c: c.model.append(3), TypeError, "Module"),
    ("backend-name", lambda c: fl.set_backend("torch"), ValueError, "backend"),
    ("seed-negative", lambda c: fl.manual_seed(-3), ValueError, "seed"),
    ("rng-state-list", lambda c: random.set_state([0, 1]), TypeError, "get_state"),
    ("rng-state-counter", lambda c: random.set_state({**random.get_state(), "counter": -1}),
     ValueError, "counter"),
    ("rng-state-garbage", lambda c: random.set_state({**random.get_state(), "rng": {"x": 1}}),
     ValueError, "rng"),
    # ---- optimizer constructors over the model's parameters
    ("sgd-lr-tiny-negative", lambda c: fl.SGD(params(c), lr=-1e-12), ValueError, "lr"),
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
    ("adam-lr", lambda c: fl.Adam(params(c), lr=-1), ValueError, "lr"),
    ("rmsprop-alpha", lambda c: fl.RMSprop(params(c), alpha=1.5), ValueError, "alpha"),
    ("rmsprop-eps", lambda c: fl.RMSprop(params(c), eps=-1.0), ValueError, "eps"),
    ("rmsprop-momentum", lambda c: fl.RMSprop(params(c), momentum=-0.1), ValueError, "momentum"),
    ("rmsprop-weight-decay", lambda c: fl.RMSprop(params(c), weight_decay=-1.0), ValueError,
     "weight_decay"),
    ("nadam-betas", lambda c: fl.NAdam(params(c), betas=(0.9, 1.5)), ValueError, "betas"),
    ("nadam-momentum-decay", lambda c: fl.NAdam(params(c), momentum_decay=-0.1), ValueError,
     "momentum_decay"),
    ("nadam-eps", lambda c: fl.Nadam(params(c), eps=-1.0), ValueError, "eps"),
    ("nadam-decoupled-type", lambda c: fl.NAdam(params(c), decoupled_weight_decay="yes"), TypeError,
     "decoupled_weight_decay"),
    ("adamw-weight-decay", lambda c: fl.AdamW(params(c), weight_decay=-0.01), ValueError,
     "weight_decay"),
    ("adamw-betas", lambda c: fl.AdamW(params(c), betas=(0.9, 1.0)), ValueError, "betas"),
    ("optim-empty", lambda c: fl.SGD([], lr=0.1), ValueError, "empty"),
    ("optim-empty-generator", lambda c: fl.Adam(p for p in []), ValueError, "empty"),
    ("optim-non-parameter", lambda c: fl.SGD(params(c) + [np.zeros(3, f32)], lr=0.1), TypeError,
     "Parameter"),
    ("optim-module", lambda c: fl.Adam([c.model]), TypeError, "Parameter"),
    ("optim-duplicate", lambda c: fl.SGD(params(c) + params(c)[:1], lr=0.1), ValueError, "more than once"),
    ("optim-single-parameter", lambda c: fl.SGD(c.model[0].weight, lr=0.1), TypeError, "iterable"),
    ("optim-group-bad-lr", lambda c: fl.SGD([{"params": params(c), "lr": "0.1"}]), TypeError, "lr"),
    ("optim-group-no-params", lambda c: fl.SGD([{"lr": 0.1}]), KeyError, "params"),
    ("optim-group-set", lambda c: fl.SGD([{"params": set(params(c))}], lr=0.1), TypeError, "set"),
    ("optim-group-overlap", lambda c: fl.SGD([{"params": params(c)}, {"params": params(c)[:1]}],
                                             lr=0.1), ValueError, "more than one"),
    ("optim-nesterov-type", lambda c: fl.SGD(params(c), lr=0.1, nesterov="yes"), TypeError,
     "nesterov"),
    ("optim-amsgrad-type", lambda c: fl.Adam(params(c), amsgrad=1), TypeError, "amsgrad"),
    ("optim-centered-type", lambda c: fl.RMSprop(params(c), centered=None), TypeError, "centered"),
    # ---- optimizer misuse after construction: a failed step or group change writes nothing
    ("add-group-duplicate", lambda c: c.opt.add_param_group({"params": [c.model[0].weight]}),
     ValueError, "more than one"),
    ("add-group-no-params", lambda c: c.opt.add_param_group({"lr": 0.1}), KeyError, "params"),
    ("add-group-bad-lr", Prep(_extra(fl.Linear, 2, 2), lambda c: c.opt.add_param_group(
        {"params": list(c.extra.parameters()), "lr": -1})), ValueError, "lr"),
    ("add-group-not-dict", lambda c: c.opt.add_param_group(params(c)), TypeError, "dict"),
    ("step-lr-negative", Prep(_set_group(lr=-1.0), lambda c: c.opt.step()), ValueError,
     r"param_groups\[0\]\.lr"),
    ("step-lr-str", Prep(_set_group(lr="0.01"), lambda c: c.opt.step()), TypeError, "lr"),
    ("step-lr-inf", Prep(_set_group(lr=float("inf")), lambda c: c.opt.step()), TypeError, "lr"),
    ("step-betas-short", Prep(_set_group(betas=(0.9,)), lambda c: c.opt.step()), TypeError, "betas"),
    ("step-eps-negative", Prep(_set_group(eps=-1.0), lambda c: c.opt.step()), ValueError, "eps"),
    ("step-rebound-shape", Prep(_rebind_last_to_shape, lambda c: c.opt.step()), RuntimeError,
     "shape"),
    # ---- parameter assignments
    ("param-grad-shape", lambda c: setattr(c.model[0].weight, "grad", np.zeros((2, 2), f32)),
     ValueError, "grad.*shape"),
    ("param-grad-dtype", lambda c: setattr(c.model[0].weight, "grad", np.zeros((3, 4))), ValueError,
     "grad.*dtype"),
    ("param-grad-list", lambda c: setattr(c.model[0].bias, "grad", [0.0, 0.0, 0.0]), TypeError,
     "grad"),
    ("param-grad-strided", lambda c: setattr(c.model[0].weight, "grad", np.zeros((4, 3), f32).T),
     ValueError, "contiguous"),
    ("param-data-int", lambda c: setattr(c.model[0].weight, "data", np.zeros((3, 4), int)),
     TypeError, "dtype"),
    ("param-data-strided", lambda c: setattr(c.model[0].weight, "data", np.zeros((4, 3), f32).T),
     ValueError, "contiguous"),
    ("param-data-list", lambda c: setattr(c.model[0].bias, "data", [0.0] * 3), TypeError, "ndarray"),
    # ---- backward misuse
    ("backward-twice", Prep(lambda c: c.model.backward(c.loss.backward()),
                            lambda c: c.model.backward(np.ones((N, 2), f32))), RuntimeError,
     "second time"),
    ("loss-backward-twice", Prep(lambda c: c.loss.backward(), lambda c: c.loss.backward()),
     RuntimeError, "second time"),
    ("layer-backward-twice", Prep(_linear_forward_backward,
                                  lambda c: c.extra.backward(np.ones((2, 3), f32))), RuntimeError,
     "second time"),
    ("layer-backward-before-forward", Prep(_extra(fl.Linear, 2, 3),
                                           lambda c: c.extra.backward(np.ones((2, 3), f32))),
     RuntimeError, "before forward"),
    ("loss-grad-output-str", lambda c: c.loss.backward("2"), TypeError, "grad_output"),
    ("loss-grad-output-array", lambda c: c.loss.backward(np.ones(3)), TypeError, "grad_output"),
    ("flatten-grad-size", Prep(_flattened, lambda c: c.extra.backward(np.ones((2, 11), f32))),
     ValueError, "grad_output"),
    ("flatten-grad-transposed", Prep(_flattened, lambda c: c.extra.backward(np.ones((12, 2), f32))),
     ValueError, "grad_output"),
    ("flatten-grad-list", Prep(_flattened, lambda c: c.extra.backward([[0.0] * 12] * 2)), TypeError,
     "grad_output"),
    # ---- a Sequential forward that fails in a later layer leaves every earlier one as it was
    ("sequential-fails-late", Prep(_append_bad_head,
                                   lambda c: c.model(c.x)), ValueError, "5 features"),
    ("sequential-cnn-fails-late", Prep(_cnn_with_bad_head,
                                       lambda c: c.extra(np.ones((4, 1, 8, 8), f32))), ValueError,
     "features"),
    # ---- more loss inputs
    ("bce-nan-input", lambda c: fl.BCELoss()(np.array([np.nan, 0.5]), np.ones(2)), ValueError,
     "input"),
    ("bce-target-above-one", lambda c: fl.BCELoss()(np.full(2, 0.5), np.array([0.0, 1.5])),
     ValueError, "target"),
    ("bce-target-nan", lambda c: fl.BCELoss()(np.full(2, 0.5), np.array([0.0, np.nan])), ValueError,
     "target"),
    ("crossentropy-nan", lambda c: fl.CrossEntropy()(np.array([[np.nan, 0.5]]), np.array([0])),
     ValueError, "input"),
    ("nll-float-labels-1d", lambda c: fl.NLLLoss()(c.out, c.y.astype(np.float64)), TypeError,
     "integer"),
    # ---- optimizer state dicts: everything checked before anything is written
    ("opt-load-list", lambda c: c.opt.load_state_dict([("state", {})]), TypeError, "mapping"),
    ("opt-load-missing", lambda c: c.opt.load_state_dict({"state": {}}), KeyError, "param_groups"),
    ("opt-load-step-negative", lambda c: c.opt.load_state_dict(_opt_sd(c, 0, step=-1)), ValueError,
     "step"),
    ("opt-load-step-str", lambda c: c.opt.load_state_dict(_opt_sd(c, 0, step="3")), ValueError,
     "step"),
    ("opt-load-step-fraction-last", lambda c: c.opt.load_state_dict(_opt_sd(c, 5, step=1.5)),
     ValueError, "step"),
    ("opt-load-strings", lambda c: c.opt.load_state_dict(_opt_sd(c, 1, exp_avg=["a", "b", "c"])),
     TypeError, "exp_avg"),
    ("opt-load-shape", lambda c: c.opt.load_state_dict(_opt_sd(c, 0, exp_avg_sq=np.zeros(12, f32))),
     ValueError, "exp_avg_sq.*shape"),
    ("opt-load-unknown", lambda c: c.opt.load_state_dict(_opt_sd(c, 0, momentum_buffer=np.zeros(
        (3, 4), f32))), KeyError, "momentum_buffer"),
    ("opt-load-index", lambda c: c.opt.load_state_dict(_opt_sd_index(c, 99)), KeyError, "99"),
    ("opt-load-groups", lambda c: c.opt.load_state_dict({"state": {}, "param_groups": []}),
     ValueError, "param_groups"),
    ("opt-load-group-lr", lambda c: c.opt.load_state_dict(_opt_sd_group(c, lr=-1.0)), ValueError,
     "lr"),
    ("opt-load-group-params", lambda c: c.opt.load_state_dict(_opt_sd_group(c, params=[0, 1])),
     ValueError, "holds parameters"),
    # ---- module state dicts
    ("mod-load-list", lambda c: c.model.load_state_dict(list(c.model.state_dict().items())),
     TypeError, "mapping"),
    ("mod-load-strings", lambda c: c.model.load_state_dict(_mod_sd(c, "4.bias",
                                                                   np.array(["a", "b"]))),
     TypeError, "4.bias"),
    ("mod-load-list-value", lambda c: c.model.load_state_dict(_mod_sd(c, "4.bias", [0.0, 0.0])),
     TypeError, "4.bias"),
    ("mod-load-shape", lambda c: c.model.load_state_dict(_mod_sd(c, "4.weight", np.zeros((3, 2)))),
     ValueError, "4.weight"),
    ("mod-load-float-count", lambda c: c.model.load_state_dict(_mod_sd(
        c, "1.num_batches_tracked", np.array(1.5))), TypeError, "num_batches_tracked"),
    ("mod-load-missing", lambda c: c.model.load_state_dict({"0.weight": np.zeros((3, 4), f32)}),
     KeyError, "missing"),
    ("mod-load-unexpected", lambda c: c.model.load_state_dict(_mod_sd(c, "9.weight", np.zeros(2))),
     KeyError, "unexpected"),
    ("mod-load-strict-type", lambda c: c.model.load_state_dict(c.model.state_dict(), strict="no"),
     TypeError, "strict"),
    # ---- module misuse
    ("train-mode-str", lambda c: c.model.train("eval"), TypeError, "mode"),
    ("to-int", lambda c: c.model.to(np.int32), TypeError, "dtype"),
    ("sequential-float-index", lambda c: c.model[1.0], TypeError, "integer"),
    ("sequential-index-range", lambda c: c.model[9], IndexError, "out of range"),
    # ---- layer norm and embedding (issue 18). An Embedding draws its weight from the seeded
    # generator, so the cases whose failing call is not the constructor build it in preparation.
    ("layernorm-trailing-shape", lambda c: fl.LayerNorm(4)(np.ones((2, 3), f32)), ValueError,
     r"normalized_shape=\(4,\).*\(\*, 4\)"),
    ("layernorm-trailing-2d", lambda c: fl.LayerNorm((2, 3))(np.ones((4, 3, 2), f32)), ValueError,
     r"\(\*, 2, 3\)"),
    ("layernorm-too-few-dims", lambda c: fl.LayerNorm((2, 3))(np.ones(3, f32)), ValueError,
     "input with shape"),
    ("layernorm-int", lambda c: fl.LayerNorm(3)(np.ones((2, 3), np.int64)), TypeError,
     "input.*dtype"),
    ("layernorm-dtype-mismatch", lambda c: fl.LayerNorm(3)(np.ones((2, 3))), TypeError,
     "float64.*float32"),
    ("layernorm-list", lambda c: fl.LayerNorm(3)([[1.0, 2.0, 3.0]]), TypeError, "ndarray"),
    ("layernorm-grad-shape", Prep(lambda c: setattr(c, "extra", _after(fl.LayerNorm(3), (2, 3))),
                                  lambda c: c.extra.backward(np.ones((3, 2), f32))), ValueError,
     "grad_output"),
    ("layernorm-grad-dtype", Prep(lambda c: setattr(c, "extra", _after(fl.LayerNorm(3), (2, 3))),
                                  lambda c: c.extra.backward(np.ones((2, 3)))), TypeError,
     "grad_output"),
    ("layernorm-zero-shape", lambda c: fl.LayerNorm(0), ValueError, "normalized_shape"),
    ("layernorm-empty-shape", lambda c: fl.LayerNorm(()), ValueError, "normalized_shape"),
    ("layernorm-str-shape", lambda c: fl.LayerNorm("3"), TypeError, "normalized_shape"),
    ("layernorm-float-shape", lambda c: fl.LayerNorm((2, 3.0)), TypeError, "normalized_shape"),
    ("layernorm-eps", lambda c: fl.LayerNorm(3, eps=-1e-5), ValueError, "eps"),
    ("layernorm-affine-type", lambda c: fl.LayerNorm(3, elementwise_affine=1), TypeError,
     "elementwise_affine"),
    ("layernorm-bias-type", lambda c: fl.LayerNorm(3, bias=None), TypeError, "bias"),
    ("layernorm-half-dtype", lambda c: fl.LayerNorm(3, dtype=np.float16), TypeError, "dtype"),
    ("embedding-index-too-big", Prep(_extra(fl.Embedding, 10, 3),
                                     lambda c: c.extra(np.array([[1, 10]]))), IndexError,
     "index out of range in self.*10"),
    ("embedding-index-negative", Prep(_extra(fl.Embedding, 10, 3),
                                      lambda c: c.extra(np.array([0, -1], np.int32))), IndexError,
     "index out of range in self.*-1"),
    ("embedding-index-float", Prep(_extra(fl.Embedding, 10, 3),
                                   lambda c: c.extra(np.array([1.0, 2.0]))), TypeError,
     "int32 or int64"),
    ("embedding-index-bool", Prep(_extra(fl.Embedding, 10, 3), lambda c: c.extra(np.array([True]))),
     TypeError, "int32 or int64"),
    ("embedding-index-int16", Prep(_extra(fl.Embedding, 10, 3),
                                   lambda c: c.extra(np.array([1], np.int16))), TypeError, "int16"),
    ("embedding-index-list", Prep(_extra(fl.Embedding, 10, 3), lambda c: c.extra([1, 2])),
     TypeError, "ndarray"),
    ("embedding-grad-shape", Prep(lambda c: (setattr(c, "extra", fl.Embedding(10, 3)),
                                             c.extra(np.array([[1, 2]]))),
                                  lambda c: c.extra.backward(np.ones((2, 3), f32))), ValueError,
     "grad_output"),
    ("embedding-grad-dtype", Prep(lambda c: (setattr(c, "extra", fl.Embedding(10, 3)),
                                             c.extra(np.array([[1, 2]]))),
                                  lambda c: c.extra.backward(np.ones((1, 2, 3)))), TypeError,
     "grad_output"),
    ("embedding-padding-too-big", lambda c: fl.Embedding(10, 3, padding_idx=10), ValueError,
     "padding_idx"),
    ("embedding-padding-too-small", lambda c: fl.Embedding(10, 3, padding_idx=-11), ValueError,
     "padding_idx"),
    ("embedding-padding-float", lambda c: fl.Embedding(10, 3, padding_idx=1.0), TypeError,
     "padding_idx"),
    ("embedding-padding-bool", lambda c: fl.Embedding(10, 3, padding_idx=True), TypeError,
     "padding_idx"),
    ("embedding-zero-num", lambda c: fl.Embedding(0, 3), ValueError, "num_embeddings"),
    ("embedding-negative-dim", lambda c: fl.Embedding(10, -1), ValueError, "embedding_dim"),
    ("embedding-float-dim", lambda c: fl.Embedding(10, 3.0), TypeError, "embedding_dim"),
    ("embedding-int-dtype", lambda c: fl.Embedding(10, 3, dtype=np.int64), TypeError, "dtype"),
    ("embedding-pretrained-1d", lambda c: fl.Embedding.from_pretrained(np.ones(3, f32)), ValueError,
     "2-D"),
    ("embedding-pretrained-int", lambda c: fl.Embedding.from_pretrained(np.ones((2, 3), int)),
     TypeError, "dtype"),
    ("embedding-pretrained-list", lambda c: fl.Embedding.from_pretrained([[1.0]]), TypeError,
     "ndarray"),
    ("embedding-pretrained-freeze", lambda c: fl.Embedding.from_pretrained(
        np.ones((2, 3), f32), freeze="yes"), TypeError, "freeze"),
    ("embedding-pretrained-padding", lambda c: fl.Embedding.from_pretrained(
        np.ones((2, 3), f32), padding_idx=2), ValueError, "padding_idx"),
    # ---- Conv2d groups and padding strings, adaptive pooling
    ("conv-groups-in", lambda c: fl.Conv2d(3, 4, 3, groups=2), ValueError,
     r"in_channels \(3\) must be divisible by groups"),
    ("conv-groups-out", lambda c: fl.Conv2d(4, 6, 3, groups=4), ValueError,
     r"out_channels \(6\) must be divisible by groups"),
    ("conv-groups-zero", lambda c: fl.Conv2d(4, 4, 3, groups=0), ValueError, "groups"),
    ("conv-groups-float", lambda c: fl.Conv2d(4, 4, 3, groups=2.0), TypeError, "groups"),
    ("conv-groups-bool", lambda c: fl.Conv2d(4, 4, 3, groups=True), TypeError, "groups"),
    ("conv-same-strided", lambda c: fl.Conv2d(2, 2, 3, stride=(1, 2), padding="same"),
     ValueError, "padding='same' needs stride 1"),
    ("conv-padding-string", lambda c: fl.Conv2d(2, 2, 3, padding="full"), ValueError,
     "padding must be .*'same' or 'valid'"),
    ("conv-padding-mode-unknown", lambda c: fl.Conv2d(2, 2, 3, padding_mode="mirror"), ValueError,
     "padding_mode"),
    ("conv-padding-mode-reflect", lambda c: fl.Conv2d(2, 2, 3, padding_mode="reflect"),
     NotImplementedError, "padding_mode"),
    ("conv-2d-input", Prep(_extra(fl.Conv2d, 2, 2, 3), lambda c: c.extra(np.ones((5, 5), f32))),
     ValueError, "input must be 3-D or 4-D"),
    ("conv-unbatched-channels", Prep(_extra(fl.Conv2d, 2, 2, 3),
                                     lambda c: c.extra(np.ones((3, 5, 5), f32))), ValueError,
     "2 channels.*unbatched"),
    ("conv-grouped-channels", Prep(_extra(fl.Conv2d, 4, 4, 3, 1, 0, 1, 2),
                                   lambda c: c.extra(np.ones((1, 2, 5, 5), f32))), ValueError,
     "4 channels"),
    ("conv-depthwise-input-too-small", Prep(_extra(fl.Conv2d, 4, 4, 5, 1, 0, 1, 4),
                                            lambda c: c.extra(np.ones((1, 4, 3, 3), f32))),
     ValueError, "larger than the padded input"),
    ("conv-valid-input-too-small", Prep(_extra(fl.Conv2d, 2, 2, 3, 1, "valid"),
                                        lambda c: c.extra(np.ones((2, 2, 2, 5), f32))),
     ValueError, "larger than the padded input"),
    ("conv-depthwise-grad-shape", Prep(
        lambda c: setattr(c, "extra", _after(fl.Conv2d(4, 8, 3, padding="same", groups=4),
                                             (2, 4, 5, 5))),
        lambda c: c.extra.backward(np.ones((2, 8, 3, 3), f32))), ValueError,
     r"grad_output must have shape \(2, 8, 5, 5\)"),
    ("conv-unbatched-grad-batched", Prep(
        lambda c: setattr(c, "extra", _after(fl.Conv2d(4, 8, 3, groups=2), (4, 5, 5))),
        lambda c: c.extra.backward(np.ones((1, 8, 3, 3), f32))), ValueError,
     r"grad_output must have shape \(8, 3, 3\)"),
    ("conv-depthwise-grad-dtype", Prep(
        lambda c: setattr(c, "extra", _after(fl.Conv2d(4, 4, 3, groups=4), (2, 4, 5, 5))),
        lambda c: c.extra.backward(np.ones((2, 4, 3, 3)))), TypeError, "grad_output"),
    ("adaptive-zero", lambda c: fl.AdaptiveAvgPool2d(0), ValueError, "output_size must be >= 1"),
    ("adaptive-negative", lambda c: fl.AdaptiveMaxPool2d((2, -1)), ValueError,
     "output_size must be >= 1"),
    ("adaptive-float", lambda c: fl.AdaptiveAvgPool2d(2.5), TypeError, "output_size"),
    ("adaptive-none", lambda c: fl.AdaptiveAvgPool2d(None), TypeError, "output_size"),
    ("adaptive-triple", lambda c: fl.AdaptiveMaxPool2d((1, 2, 3)), ValueError, "output_size"),
    ("adaptive-return-indices", lambda c: fl.AdaptiveMaxPool2d(2, return_indices=1), TypeError,
     "return_indices"),
    ("adaptive-2d-input", lambda c: fl.AdaptiveAvgPool2d(2)(np.ones((4, 4), f32)), ValueError,
     "input must be 3-D or 4-D"),
    ("adaptive-empty-input", lambda c: fl.AdaptiveMaxPool2d(2)(np.ones((1, 2, 0, 4), f32)),
     ValueError, "non-zero height and width"),
    ("adaptive-int-input", lambda c: fl.AdaptiveAvgPool2d(2)(np.ones((1, 2, 4, 4), int)),
     TypeError, "input"),
    ("adaptive-grad-shape", Prep(
        lambda c: setattr(c, "extra", _after(fl.AdaptiveAvgPool2d(2), (2, 3, 5, 5))),
        lambda c: c.extra.backward(np.ones((2, 3, 5, 5), f32))), ValueError,
     r"grad_output must have shape \(2, 3, 2, 2\)"),
    ("adaptive-max-grad-dtype", Prep(
        lambda c: setattr(c, "extra", _after(fl.AdaptiveMaxPool2d((None, 2)), (2, 3, 5, 5))),
        lambda c: c.extra.backward(np.ones((2, 3, 5, 2)))), TypeError, "grad_output"),
    ("adaptive-backward-before-forward", Prep(_extra(fl.AdaptiveMaxPool2d, 2),
                                              lambda c: c.extra.backward(np.ones((1, 1, 2, 2),
                                                                                 f32))),
     RuntimeError, "before forward"),
    # ---- losses' options (issue 18): weights, ignore_index, label smoothing, K-dim and unbatched
    # inputs, L1/Huber/SmoothL1, reduction='none' and its backward
    ("ce-weight-list", lambda c: fl.CrossEntropyLoss(weight=[1.0, 2.0]), TypeError, "weight"),
    ("ce-weight-int", lambda c: fl.CrossEntropyLoss(np.array([1, 2])), TypeError, "weight"),
    ("ce-weight-2d", lambda c: fl.CrossEntropyLoss(np.ones((2, 1))), ValueError, "weight.*1-D"),
    ("ce-weight-length", lambda c: fl.CrossEntropyLoss(np.ones(3, f32))(c.out, c.y), ValueError,
     r"weight.*\(2,\)"),
    ("nll-weight-length", lambda c: fl.NLLLoss(np.ones(1))(c.out, c.y), ValueError, "weight"),
    ("ce-ignore-float", lambda c: fl.CrossEntropyLoss(ignore_index=1.0), TypeError,
     "ignore_index"),
    ("ce-ignore-bool", lambda c: fl.CrossEntropyLoss(ignore_index=True), TypeError,
     "ignore_index"),
    ("ce-ignore-huge", lambda c: fl.CrossEntropyLoss(ignore_index=2**63), ValueError,
     "ignore_index"),
    ("nll-ignore-str", lambda c: fl.NLLLoss(ignore_index="-100"), TypeError, "ignore_index"),
    ("ce-smoothing-negative", lambda c: fl.CrossEntropyLoss(label_smoothing=-0.1), ValueError,
     "label_smoothing"),
    ("ce-smoothing-above-one", lambda c: fl.CrossEntropyLoss(label_smoothing=1.5), ValueError,
     "label_smoothing"),
    ("ce-smoothing-nan", lambda c: fl.CrossEntropyLoss(label_smoothing=float("nan")), TypeError,
     "label_smoothing"),
    ("ce-smoothing-str", lambda c: fl.CrossEntropyLoss(label_smoothing="0.1"), TypeError,
     "label_smoothing"),
    ("ce-target-not-the-ignored-value", lambda c: fl.CrossEntropyLoss(ignore_index=5)(
        c.out, np.array([0, 1, -100, 0, 1])), ValueError, "target.*ignore_index=5.*-100"),
    ("ce-target-range-with-ignore", lambda c: fl.CrossEntropyLoss(ignore_index=-1)(
        c.out, np.array([0, 1, -1, 2, 1])), ValueError, "target.*found 2"),
    ("ce-probs-with-ignore-index", lambda c: fl.CrossEntropyLoss(ignore_index=0)(
        c.out, np.full((N, 2), 0.5, f32)), ValueError, "ignore_index"),
    ("ce-kdim-target-shape", lambda c: c.loss(np.ones((N, 2, 3), f32), np.zeros((N, 4), int)),
     ValueError, r"target.*\(5, 3\)"),
    ("ce-kdim-probs-shape", lambda c: c.loss(np.ones((N, 2, 3), f32),
                                             np.full((N, 2, 4), 0.5, f32)), ValueError, "target"),
    ("ce-kdim-label-range", lambda c: c.loss(np.ones((N, 2, 3), f32), np.full((N, 3), 2)),
     ValueError, "target.*2"),
    ("ce-kdim-float-labels", lambda c: c.loss(np.ones((N, 2, 3), f32), np.zeros((N, 3), f32)),
     TypeError, "integer"),
    ("ce-0d-input", lambda c: c.loss(np.array(1.0, f32), np.array(0)), ValueError, "0-d"),
    ("ce-no-classes", lambda c: c.loss(np.ones((N, 0), f32), np.zeros(N, int)), ValueError,
     "at least one class"),
    ("ce-no-classes-probs", lambda c: c.loss(np.ones((N, 0), f32), np.ones((N, 0), f32)),
     ValueError, "at least one class"),
    ("ce-unbatched-label-range", lambda c: c.loss(np.ones(2, f32), np.array(2)), ValueError,
     "target.*2"),
    ("nll-kdim-target-shape", lambda c: fl.NLLLoss()(np.ones((N, 2, 3), f32), np.zeros(N, int)),
     ValueError, "target"),
    ("huber-delta-zero", lambda c: fl.HuberLoss(delta=0.0), ValueError, "delta"),
    ("huber-delta-negative", lambda c: fl.HuberLoss(delta=-1.0), ValueError, "delta"),
    ("huber-delta-str", lambda c: fl.HuberLoss(delta="1"), TypeError, "delta"),
    ("smoothl1-beta-negative", lambda c: fl.SmoothL1Loss(beta=-0.5), ValueError, "beta"),
    ("smoothl1-beta-inf", lambda c: fl.SmoothL1Loss(beta=float("inf")), TypeError, "beta"),
    ("l1-reduction", lambda c: fl.L1Loss(reduction="avg"), ValueError, "reduction"),
    ("l1-shape", lambda c: fl.L1Loss()(np.ones((3, 4)), np.ones((4, 3))), ValueError,
     "target.*shape"),
    ("huber-dtype", lambda c: fl.HuberLoss()(np.ones(3, f32), np.ones(3)), TypeError, "target"),
    ("smoothl1-int-input", lambda c: fl.SmoothL1Loss()(np.ones(3, int), np.ones(3)), TypeError,
     "input"),
    ("bce-weight-list", lambda c: fl.BCELoss(weight=[1.0]), TypeError, "weight"),
    ("bce-weight-broadcast", lambda c: fl.BCELoss(np.ones(3))(np.full((2, 2), 0.5),
                                                              np.ones((2, 2))), ValueError,
     "weight.*broadcast"),
    ("bce-weight-more-dims", lambda c: fl.BCELoss(np.ones((1, 2, 2)))(np.full((2, 2), 0.5),
                                                                      np.ones((2, 2))),
     ValueError, "weight"),
    ("bcelogits-pos-weight-shape", lambda c: fl.BCEWithLogitsLoss(pos_weight=np.ones(3))(
        np.ones((2, 2)), np.ones((2, 2))), ValueError, "pos_weight"),
    ("bcelogits-pos-weight-int", lambda c: fl.BCEWithLogitsLoss(pos_weight=np.ones(2, int)),
     TypeError, "pos_weight"),
    ("bcelogits-weight-str", lambda c: fl.BCEWithLogitsLoss(weight="1"), TypeError, "weight"),
    ("none-backward-implicit", Prep(lambda c: (setattr(c, "extra", fl.CrossEntropyLoss(
        reduction="none")), c.extra(c.out, c.y)), lambda c: c.extra.backward()), RuntimeError,
     "implicitly created only for scalar outputs"),
    ("none-backward-shape", Prep(lambda c: (setattr(c, "extra", fl.NLLLoss(reduction="none")),
                                            c.extra(c.out, c.y)),
                                 lambda c: c.extra.backward(np.ones(N + 1, f32))), ValueError,
     "grad_output.*shape"),
    ("none-backward-dtype", Prep(lambda c: (setattr(c, "extra", fl.CrossEntropyLoss(
        reduction="none")), c.extra(c.out, c.y)), lambda c: c.extra.backward(np.ones(N))),
     TypeError, "grad_output.*dtype"),
    ("none-backward-list", Prep(lambda c: (setattr(c, "extra", fl.CrossEntropyLoss(
        reduction="none")), c.extra(c.out, c.y)), lambda c: c.extra.backward([1.0] * N)),
     TypeError, "grad_output"),
    ("none-backward-pointwise-shape", Prep(lambda c: (setattr(c, "extra", fl.HuberLoss("none")),
                                                      c.extra(c.out, np.zeros_like(c.out))),
                                           lambda c: c.extra.backward(np.ones(2 * N, f32))),
     ValueError, "grad_output"),
    ("mean-backward-array", lambda c: c.loss.backward(np.ones(2, f32)), TypeError, "grad_output"),
    ("mean-backward-nan", lambda c: c.loss.backward(float("nan")), TypeError, "grad_output"),
    # ---- activations: GELU, SiLU, Hardtanh, ReLU6, ELU, Softplus; Linear on (*, in_features)
    ("gelu-approximate-fast", lambda c: fl.GELU(approximate="fast"), ValueError, "approximate"),
    ("gelu-approximate-case", lambda c: fl.GELU("Tanh"), ValueError, "approximate"),
    ("gelu-approximate-none", lambda c: fl.GELU(approximate=None), TypeError, "approximate"),
    ("hardtanh-max-below-min", lambda c: fl.Hardtanh(1.0, -1.0), ValueError,
     "max_val.*greater than min_val"),
    ("hardtanh-max-equals-min", lambda c: fl.Hardtanh(0.5, 0.5), ValueError, "max_val"),
    ("hardtanh-min-nan", lambda c: fl.Hardtanh(float("nan"), 1.0), TypeError, "min_val"),
    ("hardtanh-max-str", lambda c: fl.Hardtanh(-1.0, "1"), TypeError, "max_val"),
    ("relu6-argument", lambda c: fl.ReLU6(3.0), TypeError, "positional"),
    ("elu-alpha-str", lambda c: fl.ELU(alpha="1"), TypeError, "alpha"),
    ("elu-alpha-bool", lambda c: fl.ELU(alpha=True), TypeError, "alpha"),
    ("elu-alpha-inf", lambda c: fl.ELU(alpha=float("inf")), TypeError, "alpha"),
    ("softplus-beta-zero", lambda c: fl.Softplus(beta=0.0), ValueError, "beta"),
    ("softplus-beta-negative", lambda c: fl.Softplus(beta=-1.0), ValueError, "beta"),
    ("softplus-beta-none", lambda c: fl.Softplus(beta=None), TypeError, "beta"),
    ("softplus-threshold-inf", lambda c: fl.Softplus(threshold=float("inf")), TypeError,
     "threshold"),
    ("gelu-int", lambda c: fl.GELU()(np.ones(3, np.int32)), TypeError, "input.*dtype"),
    ("gelu-tanh-float16", lambda c: fl.GELU("tanh")(np.ones(3, np.float16)), TypeError,
     "input.*dtype"),
    ("silu-float16", lambda c: fl.SiLU()(np.ones((2, 3), np.float16)), TypeError, "input.*dtype"),
    ("hardtanh-int", lambda c: fl.Hardtanh()(np.ones(3, np.int64)), TypeError, "input.*dtype"),
    ("relu6-bool", lambda c: fl.ReLU6()(np.ones(3, bool)), TypeError, "input.*dtype"),
    ("elu-float16", lambda c: fl.ELU()(np.ones(3, np.float16)), TypeError, "input.*dtype"),
    ("softplus-int", lambda c: fl.Softplus()(np.arange(3)), TypeError, "input.*dtype"),
    ("softplus-list", lambda c: fl.Softplus()([1.0, 2.0]), TypeError, "input.*ndarray"),
    ("gelu-grad-shape", lambda c: _after(fl.GELU(), (2, 3)).backward(np.ones((3, 2), f32)),
     ValueError, "grad_output"),
    ("silu-grad-dtype", lambda c: _after(fl.SiLU(), (2, 3)).backward(np.ones((2, 3))), TypeError,
     "grad_output"),
    ("elu-grad-int", lambda c: _after(fl.ELU(), (2, 3)).backward(np.ones((2, 3), int)), TypeError,
     "grad_output"),
    ("relu6-grad-shape", lambda c: _after(fl.ReLU6(), (2, 3)).backward(np.ones(6, f32)),
     ValueError, "grad_output"),
    ("softplus-backward-before-forward", lambda c: fl.Softplus().backward(np.ones(2, f32)),
     RuntimeError, "before forward"),
    ("linear-features-3d", lambda c: c.model[0](np.ones((2, 3, 5), f32)), ValueError,
     "input.*4 features"),
    ("linear-gelu-features-3d", Prep(_fused_gelu_3d, lambda c: c.extra(np.ones((2, 5, 3), f32))),
     ValueError, "4 features"),
    ("linear-gelu-grad-flattened", Prep(_fused_gelu_3d,
                                        lambda c: c.extra.backward(np.ones((10, 3), f32))),
     ValueError, "grad_output"),
    ("linear-gelu-grad-dtype", Prep(_fused_gelu_3d,
                                    lambda c: c.extra.backward(np.ones((2, 5, 3)))),
     TypeError, "grad_output"),
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
    prepare = call.prepare if isinstance(call, Prep) else None
    if prepare is not None:
        prepare(ctx)
        call = call.call
    before = ctx.fingerprint()
    try:
        with pytest.raises(exc, match=match):
            call(ctx)
    finally:
        fl.set_backend(backend_name)      # the "backend-name" case must not switch anything
    assert fl.get_backend() == backend_name
    assert ctx.fingerprint() == before, "a failed call changed the state"
    if not getattr(prepare, "breaks_training", False):
        ctx.assert_trains_like_a_twin(prepare)


def test_elementwise_backward_shape_message_names_grad_output():
    relu = _after(fl.ReLU(), (2, 3))
    with pytest.raises(ValueError, match="grad_output"):
        relu.backward(np.ones((3, 2), f32))


def test_elementwise_backward_bad_shape_raises_value_error():
    for act in (fl.ReLU(), fl.LeakyReLU(), fl.Sigmoid(), fl.Tanh(), fl.GELU(), fl.SiLU(),
                fl.Hardtanh(), fl.ReLU6(), fl.ELU(), fl.Softplus()):
        _after(act, (2, 3))
        with pytest.raises(ValueError, match="shape"):
            act.backward(np.ones((3, 2), f32))
        with pytest.raises(TypeError, match="grad_output"):
            act.backward(np.ones((2, 3)))
