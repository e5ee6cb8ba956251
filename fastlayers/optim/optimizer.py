"""Optimizers with torch.optim's formulas and contract: SGD (momentum, Nesterov, weight decay),
RMSprop, Adam (amsgrad), NAdam.

An optimizer holds the :class:`~fastlayers.Parameter` objects, never copies of their arrays: every
``step()`` reads each parameter's ``data`` and ``grad`` as they are now and updates ``data`` in
place, one compiled call per parameter (the "foreach" shape of PyTorch's multi-tensor optimizers).
So a parameter shared by two optimizers, a rebound ``p.data``/``p.grad`` and a model converted with
``.to()`` all train as in PyTorch, and a parameter whose ``grad`` is None is skipped. Per-parameter
calls cost 1-4% of a step over one packed buffer at the speed-run models' sizes
(docs/benchmarks.md), and need no re-homing of anyone's arrays.

Parameters come in groups (``param_groups``: dicts of ``params`` and hyperparameters, writable
between steps); per-parameter state (``state[p]``: ``step``, ``exp_avg``, ...) is created at a
parameter's first step, in its shape and dtype, as PyTorch's is. ``state_dict()`` follows PyTorch's
layout: ``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``.

Every step checks all groups' hyperparameters and every parameter first, and only then writes, so a
step that raises changes nothing.

The notebooks' names stay available: ``Momentum`` is SGD with momentum 0.9 by default, and ``Nadam``
is :class:`NAdam`.
"""
from collections.abc import Iterable, Mapping

import numpy as np

from fastlayers import _checks, backend
from fastlayers.module import Parameter, zero_grads


def _lr(name, lr):
    return _checks.real(name, lr, low=0.0)      # 0 is allowed, as in PyTorch (a schedule may reach it)


def _nonneg(name, value):
    return _checks.real(name, value, low=0.0)


def _any_real(name, value):
    return _checks.real(name, value)


def _unit(name, value):
    return _checks.real(name, value, 0.0, 1.0)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _betas(name, betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    return tuple(_checks.real(f"{name}[{i}]", b, 0.0, 1.0, high_open=True)
                 for i, b in enumerate(betas))


def _step_count(name, value):
    """A step count: a non-negative integer (an integral float, as PyTorch saves it, is accepted)."""
    v = np.asarray(value)
    if v.shape != () or v.dtype.kind not in "iuf" or not np.isfinite(v) or v != np.floor(v) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(v)


class _Views:
    """One parameter's arrays as the kernels take them (1-D views of ``data``, ``grad`` and the
    state arrays), kept between steps while the parameter and its state hold the same arrays: a
    step then costs the kernel call and a few identity checks (re-shaping and re-checking the arrays
    of every parameter on every step measured 3-7% of the mlp's training step)."""

    __slots__ = ("data", "grad", "state", "p", "g", "empty", "flat")

    def __init__(self, param, state):
        self.data, self.grad, self.state = param.data, param.grad, state
        self.p, self.g = self.data.reshape(-1), self.grad.reshape(-1)
        self.empty = self.p[:0]
        self.flat = {}      # state array name -> (the array, its flat view)

    def fits(self, param, state):
        """Whether ``param`` and its ``state`` still hold the arrays these views show."""
        if self.data is not param.data or self.grad is not param.grad or self.state is not state:
            return False
        for name, entry in self.flat.items():
            if state.get(name) is not entry[0]:
                return False
        return True

    def array(self, name):
        """State array ``name``, flat; zeros (in the parameter's shape) when it does not exist yet."""
        entry = self.flat.get(name)
        if entry is None:
            a = self.state.get(name)
            if a is None:
                a = self.state[name] = np.zeros_like(self.data)
            entry = self.flat[name] = (a, a.reshape(-1))
        return entry[1]


class Optimizer:
    """Base class: parameter groups, per-parameter state, checked steps.

    A subclass names its hyperparameters and their checks in ``_HYPER`` (name -> check(name,
    value)), the per-parameter arrays it keeps in ``_ARRAYS`` and implements ``_update``.
    """

    _HYPER = {"lr": _lr}
    _ARRAYS = ()
    _SCALARS = ()

    def __init__(self, params, defaults):
        self.defaults = self._check_group(defaults, "")
        self.param_groups = []
        self.state = {}
        self._checked = {}      # group index -> (hyperparameter values, their checked form)
        self._views = {}        # Parameter -> _Views of the arrays it held at its last step
        if isinstance(params, (Parameter, Mapping)) or not isinstance(params, Iterable):
            raise TypeError(f"{type(self).__name__} expects an iterable of Parameters or of "
                            f"parameter-group dicts, got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not all(isinstance(g, Mapping) for g in groups):
            groups = [{"params": groups}]
        staged = []
        for g in groups:
            staged.append(self._new_group(g, staged))
        self.param_groups = staged

    # ------------------------------------------------------------------------------ groups

    def _check_group(self, group, where):
        """The group's hyperparameters, each checked (``where`` prefixes the names in errors)."""
        out = {}
        for name, check in self._HYPER.items():
            if name not in group:
                raise KeyError(f"{type(self).__name__}: parameter group is missing {name!r}")
            out[name] = check(f"{where}{name}", group[name])
        self._check_combination(out, where)
        return out

    def _check_combination(self, hyper, where):
        """Constraints between hyperparameters (subclasses override)."""

    def _new_group(self, group, others):
        """A checked copy of ``group`` (a dict with ``params``), its missing hyperparameters taken
        from the defaults; nothing is registered until every group passed."""
        name = type(self).__name__
        if not isinstance(group, Mapping):
            raise TypeError(f"{name}: a parameter group must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise KeyError(f"{name}: a parameter group needs a 'params' entry")
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: parameters must be given in a fixed order (a list), not a set")
        elif not isinstance(params, Iterable) or isinstance(params, (str, bytes, Mapping)):
            raise TypeError(f"{name}: 'params' must be a Parameter or an iterable of Parameters, "
                            f"got {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError(f"{name} got an empty parameter list")
        names = None
        if all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in params):
            names, params = [n for n, _ in params], [p for _, p in params]   # named_parameters()
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name} expects Parameters (e.g. model.parameters()), got "
                                f"{type(p).__name__}")
        ids = {id(p) for p in params}
        if len(ids) != len(params):
            raise ValueError(f"{name}: a parameter appears more than once in a group")
        if any(id(p) in ids for g in list(self.param_groups) + list(others) for p in g["params"]):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        merged = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        if names is not None:
            merged["param_names"] = names
        index = len(self.param_groups) + len(others)
        return {"params": params, **merged, **self._check_group(merged, f"param_groups[{index}].")}

    def add_param_group(self, param_group):
        """Add a group (a dict with ``params`` and any hyperparameters to override), e.g. layers
        unfrozen during fine-tuning, as ``torch.optim.Optimizer.add_param_group``."""
        self.param_groups.append(self._new_group(param_group, []))

    # ------------------------------------------------------------------------------ steps

    def zero_grad(self, set_to_none=False):
        """Zero every parameter's gradient, or set it to None with ``set_to_none`` (PyTorch's
        default is True; filling keeps the arrays, which the next backward reuses)."""
        zero_grads(self._indexed(), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient. ``closure``, if given, is called first (it
        re-evaluates the model and returns the loss, which ``step`` returns)."""
        loss = closure() if closure is not None else None
        work = []
        for i, group in enumerate(self.param_groups):
            hyper = self._hyper_of(i, group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                views = self._views.get(p)
                if views is None or not views.fits(p, state):
                    self._check_state(p, state)
                    views = None
                work.append((p, hyper, state, views))
        ops = backend.ops()
        for p, hyper, state, views in work:
            if views is None:
                views = self._views[p] = _Views(p, self._state_for(p, state))
            self._update(ops, views, hyper, views.state)
        return loss

    def _hyper_of(self, i, group):
        """Group ``i``'s checked hyperparameters; checked again only when a value changed (the
        groups are writable between steps)."""
        values = tuple(_frozen(group.get(k)) for k in self._HYPER)
        cached = self._checked.get(i)
        if cached is None or cached[0] != values:
            cached = self._checked[i] = (values, self._check_group(group, f"param_groups[{i}]."))
        return cached[1]

    def _check_state(self, p, state):
        """A clear error if ``p``'s state (None: no state yet) no longer fits ``p``."""
        for k in self._ARRAYS if state is not None else ():
            a = state.get(k)
            if a is not None and a.shape != p.shape:
                raise RuntimeError(f"{type(self).__name__}.step(): the state {k!r} of a parameter "
                                   f"has shape {a.shape} but the parameter now has shape "
                                   f"{p.shape}; a parameter rebound to another shape needs a new "
                                   f"optimizer")

    def _state_for(self, p, state):
        """``p``'s state, created at its first step and converted to its dtype when the parameter
        changed dtype (``model.to``)."""
        if state is None:
            state = self.state[p] = {"step": 0}
        for k in self._ARRAYS:
            a = state.get(k)
            if a is not None and a.dtype != p.dtype:
                state[k] = a.astype(p.dtype)
        return state

    def _update(self, ops, views, hyper, state):
        """One compiled update of a parameter (``views`` holds its arrays, flat)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ state

    def _indexed(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """Copies of the per-parameter state and the groups' hyperparameters, keyed as PyTorch's:
        parameters are numbered in group order."""
        index = {id(p): i for i, p in enumerate(self._indexed())}
        state = {index[id(p)]: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned, for the same parameters in the same groups.
        Every key, type, shape and step count is checked before anything is written."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{name} expects a mapping (a state_dict()), got "
                            f"{type(state_dict).__name__}")
        if set(state_dict) != {"state", "param_groups"}:
            raise KeyError(f"{name}: expected the keys 'state' and 'param_groups', got "
                           f"{sorted(map(str, state_dict))}")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
            raise ValueError(f"{name}: 'param_groups' must be a list of {len(self.param_groups)} "
                             f"groups, got {groups!r:.80}")
        new_groups = []
        offset = 0
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, Mapping) or "params" not in saved:
                raise TypeError(f"{name}: param_groups[{i}] must be a dict with 'params'")
            n = len(own["params"])
            if list(saved["params"]) != list(range(offset, offset + n)):
                raise ValueError(f"{name}: param_groups[{i}] holds parameters {saved['params']!r:.80}"
                                 f", this optimizer's group {i} has {n} (indices {offset}.."
                                 f"{offset + n - 1})")
            offset += n
            merged = {**own, **{k: v for k, v in saved.items() if k != "params"}}
            hyper = self._check_group(merged, f"{name}: param_groups[{i}].")
            new_groups.append({**merged, **hyper, "params": own["params"]})
        if not isinstance(state, Mapping):
            raise TypeError(f"{name}: 'state' must be a dict of parameter index -> dict, got "
                            f"{type(state).__name__}")
        params = self._indexed()
        new_state = {}
        for key, entry in state.items():
            idx = _index(key)
            if idx is None or idx >= len(params):
                raise KeyError(f"{name}: state key {key!r} is not a parameter index in "
                               f"[0, {len(params)})")
            new_state[params[idx]] = self._checked_entry(f"{name}: state[{idx}]", entry,
                                                         params[idx])
        for g, new in zip(self.param_groups, new_groups):
            g.clear()
            g.update(new)
        self.state = new_state
        self._views = {}

    def _checked_entry(self, where, entry, p):
        """A copy of one parameter's saved state, checked to fit ``p``."""
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
        known = {"step"} | set(self._ARRAYS) | set(self._SCALARS)
        unknown = set(entry) - known
        if unknown:
            raise KeyError(f"{where}: unexpected entries {sorted(map(str, unknown))} (a "
                           f"{type(self).__name__} keeps {sorted(known)})")
        out = {"step": _step_count(f"{where}['step']", entry.get("step", 0))}
        for k in self._SCALARS:
            if k in entry:
                out[k] = _checks.real(f"{where}[{k!r}]", _scalar(entry[k]))
        for k in self._ARRAYS:
            if k in entry and entry[k] is not None:
                a = _checks.state_array(f"{where}[{k!r}]", entry[k], p.data)
                out[k] = np.array(a, dtype=p.dtype)
        return out

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {g[k]}" for k in sorted(g) if k != "params"]
        return "\n".join(lines + [")"])


_PLAIN = (float, int, bool, str, type(None))


def _frozen(value):
    """``value`` as compared between steps: lists as tuples (an in-place change of a list is a
    change); an array never equal to anything (it is checked, and refused, every time)."""
    if type(value) in _PLAIN:       # the usual case, decided first: this runs on every step
        return value
    if isinstance(value, np.ndarray):
        return object()
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _index(key):
    """A state key as a parameter index (an int, or its decimal string, as files store keys)."""
    if isinstance(key, str):
        return int(key) if key.isdigit() else None
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        return int(key)
    return None


def _scalar(value):
    v = np.asarray(value)
    return v.item() if v.shape == () and v.dtype.kind in "iuf" else value


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (``v = momentum v + (1 - dampening) g``,
    ``p -= lr v``), Nesterov momentum, and L2 weight decay added to the gradient."""

    _HYPER = {"lr": _lr, "momentum": _nonneg, "dampening": _any_real, "weight_decay": _nonneg,
              "nesterov": _flag}
    _ARRAYS = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_combination(self, h, where):
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError(f"{where}nesterov momentum requires momentum > 0 and dampening = 0")

    def _update(self, ops, v, h, state):
        state["step"] += 1
        first = h["momentum"] != 0 and state.get("momentum_buffer") is None
        buf = v.array("momentum_buffer") if h["momentum"] else v.empty
        ops.sgd_step(v.p, v.g, buf, h["lr"], h["momentum"], h["dampening"], h["weight_decay"],
                     h["nesterov"], first)


class Momentum(SGD):
    """The notebooks' momentum optimizer: :class:`SGD` with ``momentum=0.9`` by default.
    (``v = mu v + g; p -= lr v`` equals the notebooks' ``v = mu v - lr g; p += v`` at a fixed lr.)"""

    def __init__(self, params, lr=1e-2, momentum=0.9, **kwargs):
        super().__init__(params, lr=lr, momentum=momentum, **kwargs)


class RMSprop(Optimizer):
    """RMSprop: divides the gradient by a running root-mean-square (eps added after the root)."""

    _HYPER = {"lr": _lr, "alpha": _unit, "eps": _nonneg, "weight_decay": _nonneg,
              "momentum": _nonneg, "centered": _flag}
    _ARRAYS = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _update(self, ops, v, h, state):
        state["step"] += 1
        gavg = v.array("grad_avg") if h["centered"] else v.empty
        buf = v.array("momentum_buffer") if h["momentum"] else v.empty
        ops.rmsprop_step(v.p, v.g, v.array("square_avg"), gavg, buf, h["lr"], h["alpha"], h["eps"],
                         h["weight_decay"], h["momentum"], h["centered"])


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (as torch.optim.Adam);
    ``amsgrad`` keeps the maximum of the second moments."""

    _HYPER = {"lr": _lr, "betas": _betas, "eps": _nonneg, "weight_decay": _nonneg,
              "amsgrad": _flag}
    _ARRAYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _update(self, ops, v, h, state):
        state["step"] += 1
        vmax = v.array("max_exp_avg_sq") if h["amsgrad"] else v.empty
        l2, decay = self._decay(h)
        ops.adam_step(v.p, v.g, v.array("exp_avg"), v.array("exp_avg_sq"), vmax, h["lr"],
                      h["betas"][0], h["betas"][1], h["eps"], l2, state["step"], h["amsgrad"],
                      decay)

    def _decay(self, h):
        """(L2 weight added to the gradient, factor the parameter is multiplied by first)."""
        return h["weight_decay"], 1.0


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW: each step first multiplies the
    parameter by ``1 - lr * weight_decay`` (default 0.01), and the gradient gets no L2 term."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)

    def _decay(self, h):
        return 0.0, 1.0 - h["lr"] * h["weight_decay"]


class NAdam(Optimizer):
    """Adam with Nesterov momentum and PyTorch's momentum-decay schedule
    ``mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay))``; each parameter keeps its own ``step``
    and ``mu_product`` (the product of the mu_t so far), as in PyTorch. ``weight_decay`` is L2 on
    the gradient, or with ``decoupled_weight_decay`` AdamW's multiplication by 1 - lr wd."""

    _HYPER = {"lr": _lr, "betas": _betas, "eps": _nonneg, "weight_decay": _nonneg,
              "momentum_decay": _nonneg, "decoupled_weight_decay": _flag}
    _ARRAYS = ("exp_avg", "exp_avg_sq")
    _SCALARS = ("mu_product",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, ops, v, h, state):
        t = state["step"] = state["step"] + 1
        (b1, b2), lr, md = h["betas"], h["lr"], h["momentum_decay"]
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * md))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * md))
        mu_product = state["mu_product"] = state.get("mu_product", 1.0) * mu
        coef_g = lr * (1.0 - mu) / (1.0 - mu_product)
        coef_m = lr * mu_next / (1.0 - mu_product * mu_next)
        wd = h["weight_decay"]
        l2, decay = (0.0, 1.0 - lr * wd) if h["decoupled_weight_decay"] else (wd, 1.0)
        ops.nadam_step(v.p, v.g, v.array("exp_avg"), v.array("exp_avg_sq"), b1, b2, h["eps"], l2,
                       1 - b2 ** t, coef_g, coef_m, decay)


Nadam = NAdam
