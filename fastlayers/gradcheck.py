"""Finite-difference gradient checks for any module or loss, in float64.

For a module, the scalar checked is ``L = sum(r * module(*inputs))`` with a fixed random ``r``; its
analytic gradients come from ``module.backward(r)`` (input) and ``param.grad`` (parameters). For a
loss (``module(input, target)`` returns a scalar), ``L`` is the loss and ``backward()`` gives the
input gradient. Each element is perturbed by +-eps and the central difference compared.

The random state is snapshotted and restored around every evaluation, so modules that draw random
numbers in training mode (dropout) see the same draws each time; parameters and buffers (BatchNorm's
running statistics) are restored afterwards.
"""
from dataclasses import dataclass

import numpy as np

from fastlayers import random


@dataclass
class GradcheckResult:
    """``max_rel_error``: the worst |analytic - numeric| / max(|analytic|, |numeric|, floor);
    ``where``: the array it occurred in (``"input"``, ``"input[1]"`` or a parameter name) and the
    index; ``ok``: whether it is within ``tol``."""
    max_rel_error: float
    where: str
    ok: bool

    def __bool__(self):
        return self.ok


def gradcheck(module, *inputs, target=None, eps=1e-6, tol=1e-5, floor=1e-4, seed=0):
    """Compare ``module``'s analytic gradients with central differences.

    Args:
        module: a Module, or a loss when ``target`` is given.
        inputs: the module's forward arguments: float64 arrays, or integer arrays (indices, such
            as an Embedding's, passed as they are and not differentiated).
        target: the loss target (labels or an array); None for a module.
        eps: the finite-difference step.
        tol: the largest relative error accepted.
        floor: errors on entries smaller than this are measured relative to it.
        seed: seeds the projection ``r``.

    Returns a :class:`GradcheckResult`.
    """
    params = dict(module.named_parameters())
    indices = [isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer) for x in inputs]
    floats = [("input", x) for x, i in zip(inputs, indices) if not i]
    for name, a in floats + [(n, p.data) for n, p in params.items()]:
        if not isinstance(a, np.ndarray) or a.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 arrays; {name} is "
                            f"{getattr(a, 'dtype', type(a).__name__)} (use .double() on the module)")
    inputs = [np.array(x, dtype=x.dtype if i else np.float64) for x, i in zip(inputs, indices)]
    saved = module.state_dict()
    rng_state = random.get_state()
    r = None

    def value():
        nonlocal r
        random.set_state(rng_state)
        out = module(*inputs) if target is None else module(*inputs, target)
        if target is not None:
            return float(out)
        if r is None:
            r = np.random.default_rng(seed).standard_normal(np.shape(out))
        return float(np.sum(r * out))

    try:
        value()
        for p in params.values():
            p.grad.fill(0)
        if target is None:
            grads = module.backward(r)
        else:
            grads = module.backward()
        grads = list(grads) if isinstance(grads, tuple) else [grads]
        checks = [(f"input[{i}]" if len(inputs) > 1 else "input", x, g)
                  for i, (x, g) in enumerate(zip(inputs, grads)) if not indices[i]]
        checks += [(name, p.data, p.grad.copy()) for name, p in params.items()]

        worst, where = 0.0, "nothing to check"
        for name, arr, analytic in checks:
            if analytic is None:
                continue
            flat, ana = arr.reshape(-1), np.asarray(analytic).reshape(-1)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + eps
                up = value()
                flat[i] = old - eps
                down = value()
                flat[i] = old
                numeric = (up - down) / (2 * eps)
                err = abs(ana[i] - numeric) / max(abs(ana[i]), abs(numeric), floor)
                if err > worst or where == "nothing to check":
                    worst = err
                    where = f"{name}{tuple(int(j) for j in np.unravel_index(i, arr.shape))}"
        return GradcheckResult(float(worst), where, bool(worst <= tol))
    finally:
        module.load_state_dict(saved)
        random.set_state(rng_state)
