"""Optimizers with torch.optim's formulas: SGD (momentum, Nesterov, weight decay), RMSprop, Adam, NAdam.

An optimizer packs its parameters into one contiguous buffer (and their gradients into another),
re-homing every ``Parameter.data`` and ``.grad`` as a view into it, so a step is one compiled call
over one array and ``zero_grad`` is one fill. Parameters that already are consecutive views of one
buffer (e.g. packed by an earlier optimizer over the same model) are used as they are.
Convert a model's dtype (``.to``) before creating its optimizer.

The notebooks' names stay available: ``Momentum`` is SGD with momentum 0.9 by default, and ``Nadam``
is :class:`NAdam`.
"""
import numpy as np

from fastlayers import _checks, backend
from fastlayers.module import Parameter


def _pack(params):
    """One flat data buffer and one flat grad buffer holding ``params`` in order."""
    first = params[0]
    base, gbase = first.data.base, first.grad.base
    offset = 0
    consecutive = base is not None and gbase is not None and base.ndim == 1
    for p in params:
        consecutive = (consecutive and p.data.base is base and p.grad.base is gbase
                       and p.data.ctypes.data == base.ctypes.data + offset * base.itemsize
                       and p.grad.ctypes.data == gbase.ctypes.data + offset * gbase.itemsize)
        offset += p.size
    if consecutive and offset == base.size == gbase.size:
        return base, gbase
    flat = np.empty(offset, first.dtype)
    gflat = np.empty(offset, first.dtype)
    offset = 0
    for p in params:
        n = p.size
        flat[offset:offset + n] = p.data.reshape(-1)
        gflat[offset:offset + n] = p.grad.reshape(-1)
        p.data = flat[offset:offset + n].reshape(p.shape)
        p.grad = gflat[offset:offset + n].reshape(p.shape)
        offset += n
    return flat, gflat


class Optimizer:
    """Base class: holds the packed parameters, the step count and the state arrays."""

    def __init__(self, params, state_names):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__} expects Parameters (e.g. "
                                f"model.parameters()), got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: a parameter appears more than once")
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise TypeError(f"{type(self).__name__}: all parameters must share one dtype, got "
                            f"{sorted(str(d) for d in dtypes)}")
        self.params = params
        self.flat, self.flat_grad = _pack(params)
        self.state = {name: np.zeros_like(self.flat) for name in state_names}
        self.step_count = 0

    def zero_grad(self):
        """Set every parameter's gradient to zero (one fill of the packed buffer)."""
        self.flat_grad.fill(0)

    def step(self):
        self.step_count += 1
        self._update(backend.ops())

    def _update(self, ops):
        raise NotImplementedError

    def state_dict(self):
        """Copies of the state arrays and the step count."""
        state = {k: v.copy() for k, v in self.state.items()}
        state["step_count"] = np.array(self.step_count)
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (checked before anything is written)."""
        want = set(self.state) | {"step_count"}
        if set(state) != want:
            raise KeyError(f"{type(self).__name__}.load_state_dict: expected keys {sorted(want)}, "
                           f"got {sorted(state)}")
        for k in self.state:
            if np.shape(state[k]) != self.flat.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {k!r} has shape "
                                 f"{np.shape(state[k])}, expected {self.flat.shape}")
        for k in self.state:
            self.state[k][...] = state[k]
        self.step_count = int(state["step_count"])

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({args})"


def _lr(lr):
    return _checks.real("lr", lr, low=0.0, low_open=True)


def _betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return tuple(_checks.real(f"betas[{i}]", b, 0.0, 1.0, high_open=True)
                 for i, b in enumerate(betas))


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (``v = momentum v + (1 - dampening) g``,
    ``p -= lr v``), Nesterov momentum, and L2 weight decay added to the gradient."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        self.defaults = dict(lr=_lr(lr), momentum=_checks.real("momentum", momentum, low=0.0),
                             dampening=_checks.real("dampening", dampening),
                             weight_decay=_checks.real("weight_decay", weight_decay, low=0.0),
                             nesterov=bool(nesterov))
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")
        super().__init__(params, ["momentum_buffer"] if momentum else [])

    def _update(self, ops):
        d = self.defaults
        buf = self.state.get("momentum_buffer", self.flat[:0])
        ops.sgd_step(self.flat, self.flat_grad, buf, d["lr"], d["momentum"], d["dampening"],
                     d["weight_decay"], d["nesterov"], self.step_count == 1)


class Momentum(SGD):
    """The notebooks' momentum optimizer: :class:`SGD` with ``momentum=0.9`` by default.
    (``v = mu v + g; p -= lr v`` equals the notebooks' ``v = mu v - lr g; p += v`` at a fixed lr.)"""

    def __init__(self, params, lr=1e-2, momentum=0.9, **kwargs):
        super().__init__(params, lr=lr, momentum=momentum, **kwargs)


class RMSprop(Optimizer):
    """RMSprop: divides the gradient by a running root-mean-square (eps added after the root)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        self.defaults = dict(lr=_lr(lr), alpha=_checks.real("alpha", alpha, 0.0, 1.0),
                             eps=_checks.real("eps", eps, low=0.0),
                             weight_decay=_checks.real("weight_decay", weight_decay, low=0.0),
                             momentum=_checks.real("momentum", momentum, low=0.0),
                             centered=bool(centered))
        names = ["square_avg"] + (["grad_avg"] if centered else []) + (
            ["momentum_buffer"] if momentum else [])
        super().__init__(params, names)

    def _update(self, ops):
        d, s, empty = self.defaults, self.state, self.flat[:0]
        ops.rmsprop_step(self.flat, self.flat_grad, s["square_avg"], s.get("grad_avg", empty),
                         s.get("momentum_buffer", empty), d["lr"], d["alpha"], d["eps"],
                         d["weight_decay"], d["momentum"], d["centered"])


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (as torch.optim.Adam);
    ``amsgrad`` keeps the maximum of the second moments."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        self.defaults = dict(lr=_lr(lr), betas=_betas(betas), eps=_checks.real("eps", eps, low=0.0),
                             weight_decay=_checks.real("weight_decay", weight_decay, low=0.0),
                             amsgrad=bool(amsgrad))
        super().__init__(params, ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else []))

    def _update(self, ops):
        d, s = self.defaults, self.state
        ops.adam_step(self.flat, self.flat_grad, s["exp_avg"], s["exp_avg_sq"],
                      s.get("max_exp_avg_sq", self.flat[:0]), d["lr"], d["betas"][0], d["betas"][1],
                      d["eps"], d["weight_decay"], self.step_count, d["amsgrad"])


class NAdam(Optimizer):
    """Adam with Nesterov momentum and PyTorch's momentum-decay schedule
    ``mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay))``."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3):
        self.defaults = dict(lr=_lr(lr), betas=_betas(betas), eps=_checks.real("eps", eps, low=0.0),
                             weight_decay=_checks.real("weight_decay", weight_decay, low=0.0),
                             momentum_decay=_checks.real("momentum_decay", momentum_decay, low=0.0))
        super().__init__(params, ["exp_avg", "exp_avg_sq"])
        self.mu_product = 1.0

    def _update(self, ops):
        d, s, t = self.defaults, self.state, self.step_count
        (b1, b2), lr, md = d["betas"], d["lr"], d["momentum_decay"]
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * md))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * md))
        self.mu_product *= mu
        coef_g = lr * (1.0 - mu) / (1.0 - self.mu_product)
        coef_m = lr * mu_next / (1.0 - self.mu_product * mu_next)
        ops.nadam_step(self.flat, self.flat_grad, s["exp_avg"], s["exp_avg_sq"], b1, b2, d["eps"],
                       d["weight_decay"], 1 - b2 ** t, coef_g, coef_m)

    def state_dict(self):
        state = super().state_dict()
        state["mu_product"] = np.array(self.mu_product)
        return state

    def load_state_dict(self, state):
        state = dict(state)
        mu_product = float(state.pop("mu_product", 1.0))
        super().load_state_dict(state)
        self.mu_product = mu_product


Nadam = NAdam
