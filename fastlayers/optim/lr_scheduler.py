"""Learning-rate schedulers with torch.optim.lr_scheduler's names, arguments, formulas and chaining
rules.

A scheduler rewrites ``group["lr"]`` in its optimizer's parameter groups at every ``step()``, which
follows ``optimizer.step()``. ``step()`` uses each schedule's chainable form, ``lr_t = f(lr_{t-1})``,
as torch does, so two schedulers on one optimizer compose: each scales or anneals the value the
other left. The closed form, ``lr_t = f(base_lr, t)``, serves the deprecated ``step(epoch)`` and
SequentialLR's hand-over at a milestone, again as in torch.

Constructing a scheduler records each group's starting lr as ``group["initial_lr"]`` (kept when it
is there already, so a second scheduler starts from the same base) and takes the first step
(``last_epoch`` becomes 0). Every argument is checked before anything is written, and a
constructor or step that raises leaves the optimizer's groups as they were.

``state_dict()`` is a plain dict of numbers, strings and lists, with torch's keys (LambdaLR's
functions are not saved; a callable object's ``__dict__`` is, as in torch). ``load_state_dict()``
checks every entry before writing any, and also takes a torch scheduler's ``state_dict()``.
"""
import math
import numbers
import types
import warnings
from bisect import bisect_right
from collections.abc import Mapping
from contextlib import contextmanager

from fastlayers import _checks
from fastlayers.optim.optimizer import Optimizer

__all__ = ["LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ExponentialLR",
           "CosineAnnealingLR", "LinearLR", "OneCycleLR", "SequentialLR", "ReduceLROnPlateau"]

# torch's state_dict() holds these bookkeeping flags too; loading one of its dicts ignores them.
_TORCH_FLAGS = frozenset({"_get_lr_called_within_step", "_is_initial", "verbose"})


# ---------------------------------------------------------------------------------- checks

def _optimizer(owner, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner}: optimizer must be a fastlayers.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    return optimizer


def _positive_int(name, value):
    return _checks.integer(name, value, minimum=1)


def _count(name, value):
    return _checks.integer(name, value, minimum=0)


def _epoch(name, value):
    return _checks.integer(name, value, minimum=-1)


def _positive(name, value):
    return _checks.real(name, value, low=0.0, low_open=True)


def _nonneg(name, value):
    return _checks.real(name, value, low=0.0)


def _factor(name, value):
    return _checks.real(name, value, 0.0, 1.0, low_open=True, high_open=True)


def _mode(name, value):
    return _checks.choice(name, value, ("min", "max"))


def _threshold_mode(name, value):
    return _checks.choice(name, value, ("rel", "abs"))


def _anneal_strategy(name, value):
    return _checks.choice(name, value, ("cos", "linear"))


def _beta1(name, value):
    return _checks.real(name, value, 0.0, 1.0, high_open=True)


def _reals(name, value):
    """A list of non-negative reals (learning rates, one per group)."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of numbers, got {type(value).__name__}")
    return [_nonneg(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _milestones(name, value):
    """Epochs in non-decreasing order (a repeated epoch applies its factor once per repeat, as
    torch's Counter does); a torch Counter ({epoch: repeats}) is taken too."""
    if isinstance(value, Mapping):
        value = [m for m, n in sorted(value.items()) for _ in range(_count(f"{name}[{m}]", n))]
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list of epochs (ints), got {type(value).__name__}")
    out = [_count(f"{name}[{i}]", m) for i, m in enumerate(value)]
    if any(b < a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be in increasing order, got {out}")
    return out


def _per_group(name, value, optimizer, check):
    """One checked value per parameter group: a list or tuple with one entry per group, or a single
    value for them all."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must have one value per parameter group ({n}), got "
                             f"{len(value)}")
        return [check(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [check(name, value)] * n


def _function(name, value):
    if not callable(value):
        raise TypeError(f"{name} must be a function of the epoch, got {type(value).__name__}")
    return value


@contextmanager
def _restoring(optimizer):
    """Put every parameter group's entries back as they were if the body raises."""
    saved = [dict(g) for g in optimizer.param_groups]
    try:
        yield
    except BaseException:
        for g, old in zip(optimizer.param_groups, saved):
            g.clear()
            g.update(old)
        raise


def _copy(value):
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------- base

_COUNTERS = {"last_epoch": _epoch, "_step_count": _count, "base_lrs": _reals, "_last_lr": _reals}


class LRScheduler:
    """Base class: ``base_lrs`` (the groups' ``initial_lr``), ``last_epoch`` (steps taken, 0 after
    construction) and the chainable ``step()``.

    A subclass names its own arguments and their checks in ``_ARGS`` (attribute -> check(name,
    value); ``state_dict`` saves them), implements ``get_lr()`` (the chainable form) and, where
    the schedule has one, ``_closed_form()``.

    Args:
        optimizer: the fastlayers optimizer whose ``param_groups[i]["lr"]`` the scheduler sets.
        last_epoch: the index of the last epoch taken; -1 starts afresh, another value resumes and
            needs ``initial_lr`` in every group already (from an optimizer's loaded state_dict).
    """

    _ARGS = {}
    _closed_form = None
    _is_initial = False

    def __init__(self, optimizer, last_epoch=-1):
        owner = type(self).__name__
        self.optimizer = _optimizer(owner, optimizer)
        self.last_epoch = _epoch("last_epoch", last_epoch)
        for name, check in self._ARGS.items():
            setattr(self, name, check(name, getattr(self, name)))
        if self.last_epoch != -1:
            for i, g in enumerate(optimizer.param_groups):
                missing = [k for k in ("initial_lr", *self._resume_keys()) if k not in g]
                if missing:
                    raise KeyError(f"{owner}: resuming with last_epoch={self.last_epoch} needs "
                                   f"{missing} in every parameter group, param_groups[{i}] has "
                                   f"none; load the optimizer's state_dict first, or start with "
                                   f"last_epoch=-1")
        with _restoring(optimizer):
            self._prepare_groups()
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
            self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
            self._initial_step()

    def _resume_keys(self):
        """Group entries besides ``initial_lr`` that resuming needs (subclasses override)."""
        return ()

    def _prepare_groups(self):
        """Entries a schedule writes into the groups before its first step (subclasses override)."""

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    # ------------------------------------------------------------------------------ steps

    def get_lr(self):
        """The next learning rates, one per group, from the current ones (the chainable form)."""
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rates the last step set, one per group (a copy)."""
        return list(self._last_lr)

    def step(self, epoch=None):
        """Advance one epoch (call after ``optimizer.step()``). ``epoch`` is deprecated, as in
        torch: it sets ``last_epoch`` and uses the closed form where the schedule has one."""
        if epoch is not None:
            warnings.warn("step(epoch) is deprecated, as in torch: it jumps to that epoch with the "
                          "closed form where there is one; call step() instead", UserWarning,
                          stacklevel=2)
            epoch = _count("epoch", epoch)
        self._update_lr(epoch)
        self._step_count += 1

    def _new_values(self, closed):
        """Each group's new entries (``lr``, and what else a schedule cycles)."""
        lrs = self._closed_form() if closed else self.get_lr()
        return [{"lr": lr} for lr in lrs]

    def _update_lr(self, epoch=None):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise RuntimeError(f"{type(self).__name__}: the optimizer has {len(groups)} parameter "
                               f"groups, the scheduler was built for {len(self.base_lrs)}")
        previous = self.last_epoch
        self.last_epoch = previous + 1 if epoch is None else epoch
        try:
            values = self._new_values(epoch is not None and self._closed_form is not None)
            for i, v in enumerate(values):
                _checks.real(f"{type(self).__name__}: the new lr of param_groups[{i}]", v["lr"])
        except BaseException:
            self.last_epoch = previous
            raise
        for g, v in zip(groups, values):
            g.update(v)
        self._last_lr = [g["lr"] for g in groups]

    def _current(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def _scaled(self, factor):
        """Every group's current lr times ``factor``: one step of a multiplicative schedule."""
        return [lr * factor for lr in self._current()]

    # ------------------------------------------------------------------------------ state

    def _saved(self):
        """What ``state_dict`` holds: entry -> check(name, value)."""
        return {**_COUNTERS, **self._ARGS}

    def state_dict(self):
        """The scheduler's counters and arguments, copied (not the optimizer)."""
        return {k: _copy(getattr(self, k)) for k in self._saved()}

    def _parse_state(self, state_dict):
        """The checked entries of ``state_dict``, nothing written yet."""
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{owner} expects a dict (a state_dict()), got "
                            f"{type(state_dict).__name__}")
        saved = self._saved()
        unknown = set(state_dict) - set(saved) - _TORCH_FLAGS - self._extra_keys()
        missing = set(saved) - set(state_dict)
        if unknown or missing:
            raise KeyError(f"{owner}: unexpected entries {sorted(map(str, unknown))}, missing "
                           f"{sorted(missing)}")
        out = {k: check(f"{owner}: {k}", state_dict[k]) for k, check in saved.items()}
        n = len(self.optimizer.param_groups)
        for k, v in out.items():
            if k in ("base_lrs", "_last_lr", "min_lrs") and len(v) != n:
                raise ValueError(f"{owner}: {k} has {len(v)} entries, the optimizer has {n} "
                                 f"parameter groups")
        return out

    def _extra_keys(self):
        return frozenset()

    def _apply_state(self, parsed):
        for k, v in parsed.items():
            setattr(self, k, v)

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (or a torch scheduler's state_dict)."""
        self._apply_state(self._parse_state(state_dict))


class _LRScheduler(LRScheduler):
    """torch's older name for :class:`LRScheduler`, kept for code that subclasses it."""


# ---------------------------------------------------------------------------------- schedules

class _FunctionSchedule(LRScheduler):
    """A schedule given by user functions of the epoch, one per group (LambdaLR,
    MultiplicativeLR). The functions are not saved: a plain function is stored as None and a
    callable object as its ``__dict__``, which loading updates, as in torch."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _optimizer(type(self).__name__, optimizer)
        self.lr_lambdas = _per_group("lr_lambda", lr_lambda, optimizer, _function)
        super().__init__(optimizer, last_epoch)

    def state_dict(self):
        out = super().state_dict()
        out["lr_lambdas"] = [None if isinstance(f, types.FunctionType) else dict(f.__dict__)
                             for f in self.lr_lambdas]
        return out

    def _extra_keys(self):
        return frozenset({"lr_lambdas"})

    def _parse_state(self, state_dict):
        out = super()._parse_state(state_dict)
        saved = state_dict.get("lr_lambdas", [None] * len(self.lr_lambdas))
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.lr_lambdas):
            raise ValueError(f"{owner}: lr_lambdas must be a list of {len(self.lr_lambdas)} "
                             f"entries, got {saved!r:.80}")
        for i, s in enumerate(saved):
            if s is not None and not isinstance(s, Mapping):
                raise TypeError(f"{owner}: lr_lambdas[{i}] must be None or a dict, got "
                                f"{type(s).__name__}")
        out["lr_lambdas"] = saved
        return out

    def _apply_state(self, parsed):
        saved = parsed.pop("lr_lambdas")
        super()._apply_state(parsed)
        for f, s in zip(self.lr_lambdas, saved):
            if s is not None:
                f.__dict__.update(s)


class LambdaLR(_FunctionSchedule):
    """``lr_t = base_lr * lr_lambda(t)``: the user's function (one, or one per group) gives the
    factor on the initial lr at epoch ``t``.

    Args:
        optimizer: the optimizer.
        lr_lambda: a function of the epoch, or a list of them, one per parameter group.
        last_epoch: -1 to start; see :class:`LRScheduler`.
    """

    def get_lr(self):
        return [base * f(self.last_epoch) for f, base in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_FunctionSchedule):
    """``lr_t = lr_{t-1} * lr_lambda(t)`` for ``t >= 1``: the user's function gives the factor on
    the previous epoch's lr (the first step leaves the lr as it is).

    Args: as :class:`LambdaLR`.
    """

    def get_lr(self):
        if self._is_initial:
            return self._current()
        return [g["lr"] * f(self.last_epoch)
                for f, g in zip(self.lr_lambdas, self.optimizer.param_groups)]


class StepLR(LRScheduler):
    """``lr_t = base_lr * gamma ** (t // step_size)``: decays by ``gamma`` every ``step_size``
    epochs.

    Args:
        optimizer: the optimizer.
        step_size: the period of the decay, in epochs (a positive int).
        gamma: the decay factor (a positive real, default 0.1).
        last_epoch: -1 to start; see :class:`LRScheduler`.
    """

    _ARGS = {"step_size": _positive_int, "gamma": _positive}

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        at_decay = self.last_epoch != 0 and self.last_epoch % self.step_size == 0
        return self._scaled(self.gamma) if at_decay else self._current()

    def _closed_form(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """``lr_t = base_lr * gamma ** (number of milestones <= t)``: decays by ``gamma`` at each
    milestone epoch.

    Args:
        optimizer: the optimizer.
        milestones: epochs (non-negative ints) in increasing order; a repeated epoch decays once
            per repeat.
        gamma: the decay factor (a positive real, default 0.1).
        last_epoch: -1 to start; see :class:`LRScheduler`.
    """

    _ARGS = {"milestones": _milestones, "gamma": _positive}

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = milestones, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        hits = self.milestones.count(self.last_epoch)
        return self._scaled(self.gamma ** hits) if hits else self._current()

    def _closed_form(self):
        return [base * self.gamma ** bisect_right(self.milestones, self.last_epoch)
                for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """``lr_t = base_lr * gamma ** t``.

    Args:
        optimizer: the optimizer.
        gamma: the factor per epoch (a positive real).
        last_epoch: -1 to start; see :class:`LRScheduler`.
    """

    _ARGS = {"gamma": _positive}

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return self._current() if self._is_initial else self._scaled(self.gamma)

    def _closed_form(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """``lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi t / T_max)) / 2``, stepped in its
    chainable form (as torch): past ``T_max`` the lr rises back along the cosine, with period
    ``2 T_max``.

    Args:
        optimizer: the optimizer.
        T_max: the number of epochs from the initial lr to ``eta_min`` (a positive int).
        eta_min: the lowest lr (a non-negative real, default 0).
        last_epoch: -1 to start; see :class:`LRScheduler`.
    """

    _ARGS = {"T_max": _positive_int, "eta_min": _nonneg}

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current()
        if (t - 1 - T) % (2 * T) == 0:
            # the step off the trough, where the ratio below would divide by zero
            return [lr + (base - low) * (1 - math.cos(math.pi / T)) / 2
                    for lr, base in zip(self._current(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - low) + low for lr in self._current()]

    def _closed_form(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch
                                                                     / self.T_max)) / 2
                for base in self.base_lrs]


def _start_factor(name, value):
    return _checks.real(name, value, 0.0, 1.0, low_open=True)


def _end_factor(name, value):
    return _checks.real(name, value, 0.0, 1.0)


class LinearLR(LRScheduler):
    """``lr_t = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) /
    total_iters)``: a linear ramp of the factor over ``total_iters`` epochs (a warm-up), then
    constant.

    Args:
        optimizer: the optimizer.
        start_factor: the factor at epoch 0, in (0, 1] (default 1/3).
        end_factor: the factor from ``total_iters`` on, in [0, 1] (default 1).
        total_iters: the length of the ramp in epochs (a positive int, default 5).
        last_epoch: -1 to start; see :class:`LRScheduler`.
    """

    _ARGS = {"start_factor": _start_factor, "end_factor": _end_factor,
             "total_iters": _positive_int}

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, a, b, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if t == 0:
            return self._scaled(a)
        if self._is_initial or t > n:
            return self._current()
        return self._scaled(1.0 + (b - a) / (n * a + (t - 1) * (b - a)))

    def _closed_form(self):
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return [base * (a + (b - a) * min(n, self.last_epoch) / n) for base in self.base_lrs]


def _phases(name, value):
    """OneCycleLR's phases as saved: a list of dicts naming the group entries each one anneals
    between and the step it ends at."""
    keys = {"end_step", "start_lr", "end_lr", "start_momentum", "end_momentum"}
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 3):
        raise TypeError(f"{name} must be a list of 2 or 3 phases, got {value!r:.80}")
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, Mapping) or set(p) != keys:
            raise ValueError(f"{name}[{i}] must be a dict with the keys {sorted(keys)}")
        phase = {"end_step": _checks.real(f"{name}[{i}]['end_step']", p["end_step"])}
        for k in keys - {"end_step"}:
            allowed = _LR_ENTRIES if k.endswith("_lr") else _MOMENTUM_ENTRIES
            phase[k] = _checks.choice(f"{name}[{i}][{k!r}]", p[k], allowed)
        out.append(phase)
    return out


_LR_ENTRIES = ("initial_lr", "max_lr", "min_lr")
_MOMENTUM_ENTRIES = ("base_momentum", "max_momentum")


class OneCycleLR(LRScheduler):
    """The 1cycle policy: the lr anneals from ``max_lr / div_factor`` up to ``max_lr`` over the
    first ``pct_start`` of ``total_steps``, then down to ``initial_lr / final_div_factor``; with
    ``three_phase`` it comes back to ``initial_lr`` symmetrically before the final descent. Each
    phase anneals ``lr = end + (start - end) (1 + cos(pi p)) / 2`` ('cos') or ``start + (end -
    start) p`` ('linear'), ``p`` the fraction of the phase done. With ``cycle_momentum`` the
    momentum (``betas[0]`` for Adam/NAdam, ``momentum`` for SGD/RMSprop) moves the opposite way,
    between ``max_momentum`` and ``base_momentum``. Step it once per batch.

    Args:
        optimizer: the optimizer.
        max_lr: the peak lr (a positive real, or a list, one per group).
        total_steps: the number of steps; or give ``epochs`` and ``steps_per_epoch``.
        epochs, steps_per_epoch: positive ints whose product is ``total_steps``.
        pct_start: the fraction of the steps spent rising, in [0, 1] (default 0.3).
        anneal_strategy: 'cos' (default) or 'linear'.
        cycle_momentum: whether to cycle the momentum (default True).
        base_momentum, max_momentum: its bounds (default 0.85, 0.95; or lists, one per group).
        div_factor: ``initial_lr = max_lr / div_factor`` (default 25).
        final_div_factor: ``min_lr = initial_lr / final_div_factor`` (default 1e4).
        three_phase: use the three-phase schedule (default False).
        last_epoch: -1 to start; see :class:`LRScheduler`.
    """

    _ARGS = {"total_steps": _positive_int, "_schedule_phases": _phases,
             "_anneal_func_type": _anneal_strategy,
             "cycle_momentum": _checks.boolean, "use_beta1": _checks.boolean}

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        _optimizer("OneCycleLR", optimizer)
        if total_steps is not None:
            total = _positive_int("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            total = _positive_int("epochs", epochs) * _positive_int("steps_per_epoch",
                                                                    steps_per_epoch)
        else:
            raise ValueError("OneCycleLR needs total_steps, or epochs and steps_per_epoch")
        pct = _checks.real("pct_start", pct_start, 0.0, 1.0)
        self._anneal_func_type = _anneal_strategy("anneal_strategy", anneal_strategy)
        self.cycle_momentum = _checks.boolean("cycle_momentum", cycle_momentum)
        _checks.boolean("three_phase", three_phase)
        div = _positive("div_factor", div_factor)
        final_div = _positive("final_div_factor", final_div_factor)
        max_lrs = _per_group("max_lr", max_lr, optimizer, _positive)
        self.use_beta1 = "betas" in optimizer.defaults
        momenta = None
        if cycle_momentum:
            if not self.use_beta1 and "momentum" not in optimizer.defaults:
                raise ValueError(f"OneCycleLR: cycle_momentum=True needs an optimizer with "
                                 f"'momentum' (SGD, RMSprop) or 'betas' (Adam, NAdam), "
                                 f"{type(optimizer).__name__} has neither; pass "
                                 f"cycle_momentum=False")
            # the optimizer's own rule for the value: beta1 in [0, 1), momentum >= 0
            check = _beta1 if self.use_beta1 else _nonneg
            momenta = (_per_group("max_momentum", max_momentum, optimizer, check),
                       _per_group("base_momentum", base_momentum, optimizer, check))
        ends = ([float(pct * total) - 1, float(2 * pct * total) - 2, total - 1] if three_phase
                else [float(pct * total) - 1, total - 1])
        lrs = (["initial_lr", "max_lr", "initial_lr", "min_lr"] if three_phase
               else ["initial_lr", "max_lr", "min_lr"])
        moms = (["max_momentum", "base_momentum", "max_momentum", "max_momentum"] if three_phase
                else ["max_momentum", "base_momentum", "max_momentum"])
        self._schedule_phases = [
            {"end_step": e, "start_lr": lrs[i], "end_lr": lrs[i + 1],
             "start_momentum": moms[i], "end_momentum": moms[i + 1]} for i, e in enumerate(ends)]
        self.total_steps = total
        self._start = (max_lrs, div, final_div, momenta)
        super().__init__(optimizer, last_epoch)
        del self._start

    def _resume_keys(self):
        return ("max_lr", "min_lr") + (("max_momentum", "base_momentum")
                                       if self.cycle_momentum else ())

    def _prepare_groups(self):
        max_lrs, div, final_div, momenta = self._start
        if self.last_epoch != -1:
            return
        for i, g in enumerate(self.optimizer.param_groups):
            g["initial_lr"] = max_lrs[i] / div
            g["max_lr"] = max_lrs[i]
            g["min_lr"] = g["initial_lr"] / final_div
            if momenta is not None:
                g.update(self._momentum_entry(g, momenta[0][i]),
                         max_momentum=momenta[0][i], base_momentum=momenta[1][i])

    def _momentum_entry(self, group, m):
        return {"betas": (m, *group["betas"][1:])} if self.use_beta1 else {"momentum": m}

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _phase_values(self, group):
        """The group's lr and momentum at ``last_epoch``."""
        step, start = self.last_epoch, 0.0
        last = len(self._schedule_phases) - 1
        for i, phase in enumerate(self._schedule_phases):
            end = phase["end_step"]
            if step <= end or i == last:
                if end == start:
                    raise ValueError(f"OneCycleLR: step {step} falls in a phase of zero steps "
                                     f"(pct_start against total_steps={self.total_steps}), where "
                                     f"torch divides by zero; change pct_start or total_steps")
                pct = (step - start) / (end - start)
                lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                m = (self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]],
                                  pct) if self.cycle_momentum else None)
                return lr, m
            start = end

    def _new_values(self, closed):
        if self.last_epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {self.last_epoch} times, total_steps is "
                             f"{self.total_steps}")
        out = []
        for g in self.optimizer.param_groups:
            lr, m = self._phase_values(g)
            out.append({"lr": lr, **(self._momentum_entry(g, m) if self.cycle_momentum else {})})
        return out

    def get_lr(self):
        return [v["lr"] for v in self._new_values(False)]


# ---------------------------------------------------------------------------------- composites

class SequentialLR(LRScheduler):
    """Runs ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (started afresh from
    its closed form at epoch 0) until ``milestones[1]``, and so on, e.g. a LinearLR warm-up into
    CosineAnnealingLR.

    Args:
        optimizer: the optimizer every scheduler belongs to.
        schedulers: a non-empty list of schedulers (not ReduceLROnPlateau).
        milestones: the epochs of the hand-overs, increasing ints, one fewer than schedulers.
        last_epoch: -1 to start.
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _optimizer("SequentialLR", optimizer)
        last_epoch = _epoch("last_epoch", last_epoch)
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise ValueError(f"SequentialLR: schedulers must be a non-empty list of schedulers, "
                             f"got {schedulers!r:.80}")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler):
                raise TypeError(f"SequentialLR: schedulers[{i}] must be a scheduler, got "
                                f"{type(s).__name__}")
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"SequentialLR: schedulers[{i}] is a ReduceLROnPlateau, whose "
                                 f"step needs a metric; it cannot be sequenced")
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: schedulers[{i}] ({type(s).__name__}) belongs to "
                                 f"another optimizer")
        milestones = _milestones("milestones", milestones)
        if len(set(milestones)) != len(milestones):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: milestones must have one entry fewer than "
                             f"schedulers ({len(schedulers)}), got {len(milestones)}")
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        with _restoring(optimizer):
            # each scheduler took its first step when it was built; take them back and start
            # only the first one to run, from the initial lr
            for g in optimizer.param_groups:
                g["lr"] = g["initial_lr"]
            _undo(self)
            first = self._schedulers[bisect_right(milestones, 0)]
            first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self):
        """Advance one epoch: hand over at a milestone, otherwise step the current scheduler."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            s._update_lr(0)
        else:
            s.step()
        self._last_lr = s.get_last_lr()

    def _saved(self):
        return {"_milestones": _milestones, "last_epoch": _count, "_last_lr": _reals}

    def state_dict(self):
        out = super().state_dict()
        out["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return out

    def _extra_keys(self):
        return frozenset({"_schedulers"})

    def _parse_state(self, state_dict):
        out = super()._parse_state(state_dict)
        saved = state_dict.get("_schedulers")
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self._schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: _schedulers must be a list of "
                             f"{len(self._schedulers)} state dicts")
        if len(out["_milestones"]) != len(self._schedulers) - 1:
            raise ValueError(f"SequentialLR.load_state_dict: _milestones must have "
                             f"{len(self._schedulers) - 1} entries, got {out['_milestones']}")
        out["_schedulers"] = [s._parse_state(d) for s, d in zip(self._schedulers, saved)]
        return out

    def _apply_state(self, parsed):
        for s, p in zip(self._schedulers, parsed.pop("_schedulers")):
            s._apply_state(p)
        super()._apply_state(parsed)


def _undo(scheduler):
    """Take back one step of ``scheduler`` and of every scheduler inside it."""
    if isinstance(scheduler, SequentialLR):
        for s in scheduler._schedulers:
            _undo(s)
    else:
        scheduler.last_epoch -= 1


class ReduceLROnPlateau(LRScheduler):
    """``lr = max(lr * factor, min_lr)`` when the metric passed to ``step(metric)`` has not
    improved for more than ``patience`` epochs; then waits ``cooldown`` epochs before counting
    again. Improving means ``a < best * (1 - threshold)`` ('min', 'rel'), ``a < best - threshold``
    ('min', 'abs'), ``a > best * (1 + threshold)`` ('max', 'rel') or ``a > best + threshold``
    ('max', 'abs'). A reduction smaller than ``eps`` is skipped.

    Args:
        optimizer: the optimizer.
        mode: 'min' (default) or 'max', whether the metric should fall or rise.
        factor: the reduction factor, in (0, 1) (default 0.1).
        patience: the epochs without improvement tolerated (a non-negative int, default 10).
        threshold: the least change that counts as improvement (non-negative, default 1e-4).
        threshold_mode: 'rel' (default) or 'abs'.
        cooldown: epochs to wait after a reduction (a non-negative int, default 0).
        min_lr: the lower bound of the lr (non-negative, or a list, one per group; default 0).
        eps: the least reduction applied (non-negative, default 1e-8).
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        self.optimizer = _optimizer("ReduceLROnPlateau", optimizer)
        self.mode = _mode("mode", mode)
        self.factor = _factor("factor", factor)
        self.patience = _count("patience", patience)
        self.threshold = _nonneg("threshold", threshold)
        self.threshold_mode = _threshold_mode("threshold_mode", threshold_mode)
        self.cooldown = _count("cooldown", cooldown)
        self.min_lrs = _per_group("min_lr", min_lr, optimizer, _nonneg)
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else self.min_lrs[0]
        self.eps = _nonneg("eps", eps)
        self.last_epoch = 0
        self._last_lr = self._current()
        self.mode_worse = math.inf if self.mode == "min" else -math.inf
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        t = self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return a > (best * (t + 1.0) if self.threshold_mode == "rel" else best + t)

    def step(self, metrics, epoch=None):
        """Record this epoch's metric (a number); reduce the lr after a plateau."""
        if hasattr(metrics, "item"):
            metrics = metrics.item()
        if isinstance(metrics, bool) or not isinstance(metrics, numbers.Real):
            raise TypeError(f"ReduceLROnPlateau.step: metrics must be a real number, got "
                            f"{metrics!r:.80}")
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn("step(metrics, epoch) is deprecated, as in torch: call step(metrics)",
                          UserWarning, stacklevel=2)
            epoch = _count("epoch", epoch)
        new_lrs = None
        better = self._is_better(current, self.best)
        bad = 0 if better else self.num_bad_epochs + 1
        cooldown = self.cooldown_counter
        if cooldown > 0:
            cooldown -= 1
            bad = 0     # bad epochs in a cooldown do not count
        if bad > self.patience:
            new_lrs = self._reduced()
            cooldown, bad = self.cooldown, 0
        # everything that can raise has run: now write
        if better:
            self.best = current
        self.last_epoch, self.num_bad_epochs, self.cooldown_counter = epoch, bad, cooldown
        if new_lrs is not None:
            if self.default_min_lr is not None:
                self.min_lrs = [self.default_min_lr] * len(new_lrs)
            for g, lr in zip(self.optimizer.param_groups, new_lrs):
                g["lr"] = lr
        self._last_lr = self._current()

    def _reduced(self):
        """Each group's lr after a reduction (unchanged where the cut would be below ``eps``)."""
        groups = self.optimizer.param_groups
        min_lrs = self.min_lrs
        if len(groups) != len(min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"ReduceLROnPlateau: the optimizer has {len(groups)} parameter "
                                   f"groups, min_lr was given for {len(min_lrs)}; set min_lrs to "
                                   f"one value per group")
            min_lrs = [self.default_min_lr] * len(groups)
        out = []
        for g, low in zip(groups, min_lrs):
            old = float(g["lr"])
            new = max(old * self.factor, low)
            out.append(new if old - new > self.eps else g["lr"])
        return out

    def _saved(self):
        return {"factor": _factor, "default_min_lr": _optional_nonneg, "min_lrs": _reals,
                "patience": _count, "cooldown": _count, "eps": _nonneg, "last_epoch": _count,
                "_last_lr": _reals, "mode_worse": _extended_real, "mode": _mode,
                "threshold": _nonneg, "threshold_mode": _threshold_mode, "best": _extended_real,
                "cooldown_counter": _count, "num_bad_epochs": _count}

    def _parse_state(self, state_dict):
        out = super()._parse_state(state_dict)
        worse = math.inf if out["mode"] == "min" else -math.inf
        if out["mode_worse"] != worse:
            raise ValueError(f"ReduceLROnPlateau.load_state_dict: mode_worse must be {worse} in "
                             f"mode {out['mode']!r}, got {out['mode_worse']}")
        return out


def _extended_real(name, value):
    """A real number or +-inf (a metric's best value before any step is the worst possible)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise TypeError(f"{name} must be a real number or +-inf, got {value!r}")
    return float(value)


def _optional_nonneg(name, value):
    return None if value is None else _nonneg(name, value)
