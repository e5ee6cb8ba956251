"""Learning-rate schedulers against torch.optim.lr_scheduler (skipped where torch is absent): the lr
sequences (and OneCycleLR's momentum/beta1) over 100+ steps for every scheduler and several argument
sets, chained schedulers on one optimizer, SequentialLR, ReduceLROnPlateau on a fixed metric
sequence, several parameter groups, state_dict round trips mid-way, loading torch's state dicts;
then bad arguments, which must raise naming the argument and leave the optimizer unchanged."""
import json
import math
import re
import warnings

import numpy as np
import pytest

from fastlayers import runtime

runtime.import_torch()      # before any fastlayers kernel starts Numba's threads (NOTES.md)

import fastlayers as fl  # noqa: E402
from fastlayers.optim import lr_scheduler as fls  # noqa: E402

RTOL = 1e-12


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


OPTIMIZERS = {
    "SGD": dict(momentum=0.9),
    "RMSprop": dict(momentum=0.5),
    "Adam": dict(),
    "NAdam": dict(),
}


def make_pair(torch, opt_name, lrs=(0.1,), **extra):
    """A fastlayers and a torch optimizer of the same class and settings, one group per lr, over
    parameters with gradients (so both optimizers really step)."""
    kw = {**OPTIMIZERS[opt_name], **extra}
    ours, theirs = [], []
    for lr in lrs:
        p = fl.Parameter(np.zeros(3))
        p.grad = np.ones(3)
        t = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        t.grad = torch.ones(3, dtype=torch.float64)
        ours.append({"params": [p], "lr": lr})
        theirs.append({"params": [t], "lr": lr})
    return getattr(fl.optim, opt_name)(ours, **kw), getattr(torch.optim, opt_name)(theirs, **kw)


def momentum_key(opt):
    return "betas" if "betas" in opt.defaults else "momentum"


def snapshot(opt, with_momentum):
    """Each group's lr (and momentum or beta1) as the optimizer holds it now."""
    out = []
    for g in opt.param_groups:
        out.append(float(g["lr"]))
        if with_momentum:
            m = g[momentum_key(opt)]
            out.append(float(m[0] if isinstance(m, (tuple, list)) else m))
    return out


def run(opt, schedulers, steps, with_momentum=False, optimizer_steps=True, metrics=None):
    """The sequence of group values: after construction, then after each optimizer.step() +
    scheduler.step() (every scheduler in ``schedulers``, in order)."""
    seq = [snapshot(opt, with_momentum)]
    for i in range(steps):
        if optimizer_steps:
            opt.step()
        for s in schedulers:
            s.step() if metrics is None else s.step(metrics[i])
        seq.append(snapshot(opt, with_momentum))
    return np.array(seq)


def compare(torch, opt_name, build, steps=120, lrs=(0.1,), with_momentum=False,
            optimizer_steps=True, opt_kw=None):
    """Build the scheduler(s) with ``build(module, optimizer)`` on both sides, run both and compare
    the sequences and get_last_lr()."""
    ours_opt, theirs_opt = make_pair(torch, opt_name, lrs, **(opt_kw or {}))
    ours = build(fls, ours_opt)
    theirs = build(torch.optim.lr_scheduler, theirs_opt)
    ours, theirs = (list(ours) if isinstance(ours, tuple) else [ours],
                    list(theirs) if isinstance(theirs, tuple) else [theirs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)    # torch's "scheduler.step() before ..."
        want = run(theirs_opt, theirs, steps, with_momentum, optimizer_steps)
    got = run(ours_opt, ours, steps, with_momentum, optimizer_steps)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
    np.testing.assert_allclose(ours[-1].get_last_lr(), theirs[-1].get_last_lr(), rtol=RTOL)
    return ours_opt, ours


SINGLE = {
    "LambdaLR": lambda M, o: M.LambdaLR(o, lambda e: 0.95 ** e),
    "LambdaLR-warmup": lambda M, o: M.LambdaLR(o, lambda e: min(1.0, (e + 1) / 10)),
    "MultiplicativeLR": lambda M, o: M.MultiplicativeLR(o, lambda e: 0.97),
    "StepLR": lambda M, o: M.StepLR(o, step_size=7),
    "StepLR-gamma": lambda M, o: M.StepLR(o, 3, gamma=0.8),
    "MultiStepLR": lambda M, o: M.MultiStepLR(o, milestones=[10, 30, 60]),
    "MultiStepLR-repeat": lambda M, o: M.MultiStepLR(o, [5, 30, 30, 90], gamma=0.5),
    "MultiStepLR-at-0": lambda M, o: M.MultiStepLR(o, [0, 20], gamma=0.5),
    "ExponentialLR": lambda M, o: M.ExponentialLR(o, gamma=0.97),
    "ExponentialLR-up": lambda M, o: M.ExponentialLR(o, 1.01),
    "CosineAnnealingLR": lambda M, o: M.CosineAnnealingLR(o, T_max=25, eta_min=1e-3),
    "CosineAnnealingLR-T1": lambda M, o: M.CosineAnnealingLR(o, 1, eta_min=0.01),
    "CosineAnnealingLR-long": lambda M, o: M.CosineAnnealingLR(o, 200, eta_min=1e-4),
    "LinearLR": lambda M, o: M.LinearLR(o),
    "LinearLR-args": lambda M, o: M.LinearLR(o, start_factor=0.1, end_factor=0.9,
                                             total_iters=20),
    "LinearLR-down": lambda M, o: M.LinearLR(o, 1.0, 0.25, 50),
}


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("case", sorted(SINGLE))
def test_single_scheduler_matches_torch(torch, case, opt_name):
    compare(torch, opt_name, SINGLE[case])


@pytest.mark.parametrize("case", sorted(SINGLE))
def test_several_param_groups_match_torch(torch, case):
    compare(torch, "SGD", SINGLE[case], lrs=(0.1, 0.03, 1.5))


def test_per_group_lambdas_match_torch(torch):
    compare(torch, "Adam", lambda M, o: M.LambdaLR(o, [lambda e: 0.9 ** e, lambda e: 1 / (1 + e)]),
            lrs=(0.01, 0.2))


ZERO_LR = {
    "CosineAnnealingLR-eta0": lambda M, o: M.CosineAnnealingLR(o, T_max=30),
    "LinearLR-end0": lambda M, o: M.LinearLR(o, 0.5, 0.0, 40),
}


@pytest.mark.parametrize("case", sorted(ZERO_LR))
def test_schedules_reaching_lr_zero_match_torch(torch, case):
    # the optimizer steps at lr = 0 too, as torch's does
    compare(torch, "SGD", ZERO_LR[case])


ONE_CYCLE = {
    "cos": dict(max_lr=1.0, total_steps=120),
    "linear": dict(max_lr=0.5, total_steps=150, anneal_strategy="linear"),
    "three-phase": dict(max_lr=1.0, total_steps=130, three_phase=True),
    "three-phase-linear": dict(max_lr=2.0, total_steps=101, three_phase=True,
                               anneal_strategy="linear", pct_start=0.25),
    "epochs": dict(max_lr=0.3, epochs=10, steps_per_epoch=12, pct_start=0.4, div_factor=10.0,
                   final_div_factor=100.0),
    "momenta": dict(max_lr=1.0, total_steps=110, base_momentum=0.7, max_momentum=0.9),
    "no-momentum": dict(max_lr=1.0, total_steps=110, cycle_momentum=False),
    "pct-0": dict(max_lr=1.0, total_steps=110, pct_start=0.0),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("case", sorted(ONE_CYCLE))
def test_one_cycle_lr_and_momentum_match_torch(torch, case, opt_name):
    kw = ONE_CYCLE[case]
    total = kw.get("total_steps") or kw["epochs"] * kw["steps_per_epoch"]
    opt, (s,) = compare(torch, opt_name, lambda M, o: M.OneCycleLR(o, **kw), steps=total,
                        with_momentum=True)
    # one step past total_steps raises, as in torch, and changes nothing
    before = snapshot(opt, True)
    with pytest.raises(ValueError, match="total_steps"):
        s.step()
    assert snapshot(opt, True) == before and s.last_epoch == total


def test_one_cycle_per_group_values_match_torch(torch):
    compare(torch, "Adam", lambda M, o: M.OneCycleLR(o, max_lr=[0.1, 1.0], total_steps=100,
                                                     base_momentum=[0.8, 0.85],
                                                     max_momentum=[0.9, 0.95]),
            steps=100, lrs=(0.01, 0.02), with_momentum=True)


def test_one_cycle_keeps_beta2(torch):
    opt, _ = compare(torch, "Adam", lambda M, o: M.OneCycleLR(o, 1.0, total_steps=100),
                     steps=100, opt_kw=dict(betas=(0.8, 0.99)), with_momentum=True)
    assert opt.param_groups[0]["betas"][1] == 0.99


CHAINS = {
    "Exponential+Step": lambda M, o: (M.ExponentialLR(o, 0.98), M.StepLR(o, 10, 0.5)),
    "Step+Exponential": lambda M, o: (M.StepLR(o, 10, 0.5), M.ExponentialLR(o, 0.98)),
    "Linear+Exponential": lambda M, o: (M.LinearLR(o, 0.2, 1.0, 15), M.ExponentialLR(o, 0.99)),
    "Cosine+MultiStep": lambda M, o: (M.CosineAnnealingLR(o, 40, 1e-3),
                                      M.MultiStepLR(o, [30, 70], 0.3)),
    "Multiplicative+Linear": lambda M, o: (M.MultiplicativeLR(o, lambda e: 0.99),
                                           M.LinearLR(o, 0.5, 1.0, 25)),
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_chained_schedulers_match_torch(torch, case):
    compare(torch, "SGD", CHAINS[case], lrs=(0.1, 0.5))


def _warmup_cosine(M, o):
    return M.SequentialLR(o, [M.LinearLR(o, 0.1, 1.0, 10), M.CosineAnnealingLR(o, 90, 1e-3)],
                          milestones=[10])


SEQUENTIAL = {
    "warmup-cosine": _warmup_cosine,
    "three": lambda M, o: M.SequentialLR(o, [M.LinearLR(o, 0.25, 1.0, 5),
                                             M.ExponentialLR(o, 0.97), M.StepLR(o, 10, 0.5)],
                                         milestones=[5, 40]),
    "lambda-then-multistep": lambda M, o: M.SequentialLR(
        o, [M.LambdaLR(o, lambda e: (e + 1) / 8), M.MultiStepLR(o, [20, 50], 0.5)], [8]),
    "exp-then-onecycle": lambda M, o: M.SequentialLR(
        o, [M.ExponentialLR(o, 0.9), M.OneCycleLR(o, 1.0, total_steps=100)], [20]),
}


@pytest.mark.parametrize("case", sorted(SEQUENTIAL))
def test_sequential_lr_matches_torch(torch, case):
    compare(torch, "SGD", SEQUENTIAL[case], lrs=(0.1, 0.02), with_momentum=True)


def _metrics(n=150):
    """Falls, plateaus (noisy and flat), rises: every branch of the plateau logic."""
    out = []
    for i in range(n):
        if i < 20:
            out.append(1.0 / (1 + i))
        elif i < 70:
            out.append(0.05 + 1e-3 * math.sin(i))
        elif i < 100:
            out.append(0.04 - 1e-4 * i)
        else:
            out.append(0.03)
    return out


PLATEAU = {
    "defaults": dict(),
    "patience": dict(patience=3, factor=0.5),
    "cooldown": dict(patience=2, cooldown=4, factor=0.7),
    "abs": dict(threshold=1e-3, threshold_mode="abs", patience=1),
    "max": dict(mode="max", patience=2, factor=0.5),
    "max-abs": dict(mode="max", threshold_mode="abs", threshold=0.01, patience=0),
    "min-lr": dict(patience=0, factor=0.5, min_lr=1e-3),
    "min-lr-list": dict(patience=0, factor=0.5, min_lr=[1e-2, 1e-4]),
    "eps": dict(patience=0, factor=0.9, eps=1e-3),
}


@pytest.mark.parametrize("case", sorted(PLATEAU))
def test_reduce_lr_on_plateau_matches_torch(torch, case):
    metrics = _metrics()
    ours_opt, theirs_opt = make_pair(torch, "SGD", (0.1, 0.05))
    ours = fls.ReduceLROnPlateau(ours_opt, **PLATEAU[case])
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **PLATEAU[case])
    want = run(theirs_opt, [theirs], len(metrics), metrics=metrics)
    got = run(ours_opt, [ours], len(metrics), metrics=metrics)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
    assert len(np.unique(want[:, 0])) > 1 or case == "defaults"   # the case does reduce
    np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=RTOL)
    assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == \
        (theirs.best, theirs.num_bad_epochs, theirs.cooldown_counter)


# ------------------------------------------------------------------------------ state dicts

ROUND_TRIP = {
    "StepLR": SINGLE["StepLR-gamma"],
    "MultiStepLR": SINGLE["MultiStepLR-repeat"],
    "CosineAnnealingLR": SINGLE["CosineAnnealingLR"],
    "LinearLR": SINGLE["LinearLR-args"],
    "LambdaLR": SINGLE["LambdaLR"],
    "OneCycleLR": lambda M, o: M.OneCycleLR(o, 1.0, total_steps=120, three_phase=True),
    "SequentialLR": _warmup_cosine,
    "ReduceLROnPlateau": lambda M, o: M.ReduceLROnPlateau(o, patience=2, cooldown=1),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP))
def test_state_dict_round_trip_continues_as_torch(torch, case):
    build, steps, cut = ROUND_TRIP[case], 120, 45
    metrics = _metrics(steps) if case == "ReduceLROnPlateau" else None
    theirs_opt = make_pair(torch, "Adam", (0.01, 0.002))[1]
    want = run(theirs_opt, [build(torch.optim.lr_scheduler, theirs_opt)], steps,
               with_momentum=True, metrics=metrics)

    first_opt = make_pair(torch, "Adam", (0.01, 0.002))[0]
    first = build(fls, first_opt)
    head = run(first_opt, [first], cut, with_momentum=True, metrics=metrics)
    saved_sched = json.loads(json.dumps(first.state_dict()))   # plain numbers, strings, lists
    saved_opt = first_opt.state_dict()

    # a fresh optimizer and scheduler, then the saved states (torch's order: scheduler first)
    opt = make_pair(torch, "Adam", (0.01, 0.002))[0]
    sched = build(fls, opt)
    opt.load_state_dict(saved_opt)
    sched.load_state_dict(saved_sched)
    tail = run(opt, [sched], steps - cut, with_momentum=True,
               metrics=None if metrics is None else metrics[cut:])
    np.testing.assert_allclose(np.vstack([head, tail[1:]]), want, rtol=RTOL, atol=0)


RESUME = {
    "StepLR": lambda M, o, e: M.StepLR(o, 4, 0.5, last_epoch=e),
    "MultiStepLR": lambda M, o, e: M.MultiStepLR(o, [25, 40], 0.5, last_epoch=e),
    "ExponentialLR": lambda M, o, e: M.ExponentialLR(o, 0.95, last_epoch=e),
    "CosineAnnealingLR": lambda M, o, e: M.CosineAnnealingLR(o, 30, 1e-3, last_epoch=e),
    "LinearLR": lambda M, o, e: M.LinearLR(o, 0.2, 1.0, 40, last_epoch=e),
    "OneCycleLR": lambda M, o, e: M.OneCycleLR(o, 1.0, total_steps=100, last_epoch=e),
}


@pytest.mark.parametrize("case", sorted(RESUME))
def test_resuming_with_last_epoch_matches_torch(torch, case):
    """A scheduler built with last_epoch=k on an optimizer that holds initial_lr (torch's way of
    resuming) continues as torch's does."""
    build, cut = RESUME[case], 20
    seqs = []
    for M, opt in zip((fls, torch.optim.lr_scheduler), make_pair(torch, "SGD", (0.1, 0.4))):
        first = build(M, opt, -1)
        run(opt, [first], cut, with_momentum=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            seqs.append(run(opt, [build(M, opt, first.last_epoch)], 60, with_momentum=True))
    np.testing.assert_allclose(seqs[0], seqs[1], rtol=RTOL, atol=0)


def test_state_dict_has_no_functions_and_keeps_callable_objects_state():
    class Decay:
        def __init__(self):
            self.rate = 0.9

        def __call__(self, epoch):
            return self.rate ** epoch

    p = fl.Parameter(np.zeros(2))
    fn = Decay()
    s = fls.LambdaLR(fl.SGD([p], lr=0.1), [fn])
    fn.rate = 0.5
    state = s.state_dict()
    assert state["lr_lambdas"] == [{"rate": 0.5}]
    assert fls.LambdaLR(fl.SGD([p], lr=0.1), lambda e: 1.0).state_dict()["lr_lambdas"] == [None]
    other = Decay()
    s2 = fls.LambdaLR(fl.SGD([fl.Parameter(np.zeros(2))], lr=0.1), other)
    s2.load_state_dict(state)
    assert other.rate == 0.5


@pytest.mark.parametrize("case", ["StepLR", "MultiStepLR", "CosineAnnealingLR",
                                  "ReduceLROnPlateau"])
def test_loads_torch_state_dict(torch, case):
    build, steps, cut = ROUND_TRIP[case], 100, 30
    metrics = _metrics(steps) if case == "ReduceLROnPlateau" else None
    t_opt = make_pair(torch, "SGD", (0.1,))[1]
    t_sched = build(torch.optim.lr_scheduler, t_opt)
    want = run(t_opt, [t_sched], steps, metrics=metrics)
    t_opt2 = make_pair(torch, "SGD", (0.1,))[1]
    t_sched2 = build(torch.optim.lr_scheduler, t_opt2)
    run(t_opt2, [t_sched2], cut, metrics=metrics)

    opt = make_pair(torch, "SGD", (0.1,))[0]
    sched = build(fls, opt)
    for g, tg in zip(opt.param_groups, t_opt2.param_groups):
        g["lr"] = tg["lr"]
    sched.load_state_dict(t_sched2.state_dict())
    tail = run(opt, [sched], steps - cut, metrics=None if metrics is None else metrics[cut:])
    np.testing.assert_allclose(tail, want[cut:], rtol=RTOL, atol=0)


def test_bad_state_dict_changes_nothing():
    s = fls.StepLR(fl.SGD([fl.Parameter(np.zeros(2))], lr=0.1), 3)
    s.step()
    before = s.state_dict()
    for bad, err in [({**before, "step_size": 0}, ValueError),
                     ({**before, "gamma": "x"}, TypeError),
                     ({k: v for k, v in before.items() if k != "gamma"}, KeyError),
                     ({**before, "base_lrs": [0.1, 0.1]}, ValueError),
                     ({**before, "surprise": 1}, KeyError)]:
        with pytest.raises(err):
            s.load_state_dict(bad)
        assert s.state_dict() == before


def test_step_epoch_is_deprecated_and_uses_the_closed_form(torch):
    ours_opt, theirs_opt = make_pair(torch, "SGD")
    ours, theirs = fls.StepLR(ours_opt, 4, 0.5), torch.optim.lr_scheduler.StepLR(theirs_opt, 4, 0.5)
    for e in (3, 9, 17):
        with pytest.warns(UserWarning):
            ours.step(e)
        with pytest.warns(UserWarning):
            theirs.step(e)
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=RTOL)


def test_initial_lr_and_last_epoch_as_torch(torch):
    ours_opt, theirs_opt = make_pair(torch, "SGD", (0.1, 0.3))
    ours = fls.ExponentialLR(ours_opt, 0.5)
    theirs = torch.optim.lr_scheduler.ExponentialLR(theirs_opt, 0.5)
    assert ours.last_epoch == theirs.last_epoch == 0
    assert ours.base_lrs == theirs.base_lrs
    assert [g["initial_lr"] for g in ours_opt.param_groups] == \
        [g["initial_lr"] for g in theirs_opt.param_groups]
    assert isinstance(ours, fls.LRScheduler) and issubclass(fls._LRScheduler, fls.LRScheduler)


# ------------------------------------------------------------------------------ bad arguments

def _sgd(lrs=(0.1,), **kw):
    groups = [{"params": [fl.Parameter(np.zeros(2))], "lr": lr} for lr in lrs]
    return fl.SGD(groups, **kw)


def _adam():
    return fl.Adam([fl.Parameter(np.zeros(2))], lr=0.01)


class _NoMomentum(fl.optim.Optimizer):
    """An optimizer with neither momentum nor betas, for OneCycleLR's check."""

    def __init__(self, params):
        super().__init__(params, {"lr": 0.1})


S = fls
BAD = [
    (lambda o: S.StepLR("not an optimizer", 3), TypeError, "optimizer"),
    (lambda o: S.StepLR(o, 0), ValueError, "step_size"),
    (lambda o: S.StepLR(o, 2.5), TypeError, "step_size"),
    (lambda o: S.StepLR(o, 3, gamma=0.0), ValueError, "gamma"),
    (lambda o: S.StepLR(o, 3, gamma=float("nan")), TypeError, "gamma"),
    (lambda o: S.StepLR(o, 3, last_epoch=-2), ValueError, "last_epoch"),
    (lambda o: S.StepLR(o, 3, last_epoch=4), KeyError, "initial_lr"),
    (lambda o: S.MultiStepLR(o, [30, 10]), ValueError, "milestones"),
    (lambda o: S.MultiStepLR(o, [1.5]), TypeError, "milestones"),
    (lambda o: S.MultiStepLR(o, 5), TypeError, "milestones"),
    (lambda o: S.MultiStepLR(o, [-1, 2]), ValueError, "milestones"),
    (lambda o: S.ExponentialLR(o, -0.5), ValueError, "gamma"),
    (lambda o: S.ExponentialLR(o, float("inf")), TypeError, "gamma"),
    (lambda o: S.CosineAnnealingLR(o, 0), ValueError, "T_max"),
    (lambda o: S.CosineAnnealingLR(o, 10, eta_min=-1.0), ValueError, "eta_min"),
    (lambda o: S.LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    (lambda o: S.LinearLR(o, end_factor=1.5), ValueError, "end_factor"),
    (lambda o: S.LinearLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: S.LambdaLR(o, 0.5), TypeError, "lr_lambda"),
    (lambda o: S.LambdaLR(o, [lambda e: 1.0, lambda e: 1.0]), ValueError, "lr_lambda"),
    (lambda o: S.LambdaLR(o, lambda e: 1 / 0), ZeroDivisionError, "division"),
    (lambda o: S.MultiplicativeLR(o, "x"), TypeError, "lr_lambda"),
    (lambda o: S.OneCycleLR(o, 1.0), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, 1.0, epochs=3), ValueError, "steps_per_epoch"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=0), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, 1.0, epochs=0, steps_per_epoch=3), ValueError, "epochs"),
    (lambda o: S.OneCycleLR(o, 1.0, epochs=2, steps_per_epoch=1.5), TypeError, "steps_per_epoch"),
    (lambda o: S.OneCycleLR(o, 0.0, total_steps=10), ValueError, "max_lr"),
    (lambda o: S.OneCycleLR(o, [1.0, 2.0], total_steps=10), ValueError, "max_lr"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, pct_start=0.1), ValueError, "pct_start"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, anneal_strategy="exp"), ValueError,
     "anneal_strategy"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, div_factor=0), ValueError, "div_factor"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, final_div_factor=-1), ValueError,
     "final_div_factor"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, cycle_momentum=1), TypeError,
     "cycle_momentum"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, three_phase="yes"), TypeError, "three_phase"),
    (lambda o: S.OneCycleLR(o, 1.0, total_steps=10, base_momentum=-0.1), ValueError,
     "base_momentum"),
    (lambda o: S.ReduceLROnPlateau(o, mode="minimum"), ValueError, "mode"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: S.ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="relative"), ValueError, "threshold_mode"),
    (lambda o: S.ReduceLROnPlateau(o, threshold=-1.0), ValueError, "threshold"),
    (lambda o: S.ReduceLROnPlateau(o, cooldown=0.5), TypeError, "cooldown"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=[0.0, 0.0]), ValueError, "min_lr"),
    (lambda o: S.ReduceLROnPlateau(o, eps=-1e-8), ValueError, "eps"),
    (lambda o: S.ReduceLROnPlateau([o]), TypeError, "optimizer"),
    (lambda o: S.SequentialLR(o, [], []), ValueError, "schedulers"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(o, 5)], [4, 5]), ValueError,
     "milestones"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(o, 5), S.StepLR(o, 5)], [4, 4]),
     ValueError, "milestones"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), "x"], [4]), TypeError, "schedulers[1]"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.ReduceLROnPlateau(o)], [4]), ValueError,
     "schedulers[1]"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(_sgd(), 3)], [4]), ValueError,
     "schedulers[1]"),
]


def _groups(opt):
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_arguments_raise_naming_them_and_change_nothing(i):
    build, err, name = BAD[i]
    opt = _sgd(momentum=0.9)
    with pytest.raises(err, match=re.escape(name)):
        build(opt)
    # SequentialLR's cases build inner schedulers, which write initial_lr as they should
    if "SequentialLR" not in build.__code__.co_names:
        assert _groups(opt) == _groups(_sgd(momentum=0.9))


def test_one_cycle_needs_momentum_or_betas_and_checks_beta1():
    opt = _NoMomentum([fl.Parameter(np.zeros(2))])
    with pytest.raises(ValueError, match="cycle_momentum"):
        fls.OneCycleLR(opt, 1.0, total_steps=10)
    assert "initial_lr" not in opt.param_groups[0]
    fls.OneCycleLR(opt, 1.0, total_steps=10, cycle_momentum=False)   # fine without cycling
    adam = _adam()
    before = _groups(adam)
    with pytest.raises(ValueError, match="max_momentum"):
        fls.OneCycleLR(adam, 1.0, total_steps=10, max_momentum=1.0)
    assert _groups(adam) == before


def test_sequential_lr_failure_leaves_lrs():
    opt = _sgd((0.1, 0.2))
    inner = [fls.ExponentialLR(opt, 0.5), fls.StepLR(opt, 2)]
    before = _groups(opt)
    with pytest.raises(ValueError, match="milestones"):
        fls.SequentialLR(opt, inner, [])
    assert _groups(opt) == before and [s.last_epoch for s in inner] == [0, 0]


def test_bad_metric_changes_nothing():
    opt = _sgd()
    s = fls.ReduceLROnPlateau(opt, patience=0)
    s.step(1.0)
    before = s.state_dict()
    with pytest.raises(TypeError, match="metrics"):
        s.step("low")
    assert s.state_dict() == before


def test_scheduler_after_new_param_group_raises():
    opt = _sgd()
    s = fls.StepLR(opt, 2)
    opt.add_param_group({"params": [fl.Parameter(np.zeros(2))], "lr": 0.3})
    before = _groups(opt)
    with pytest.raises(RuntimeError, match="parameter groups"):
        s.step()
    assert _groups(opt) == before and s.last_epoch == 0
