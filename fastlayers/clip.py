"""Gradient clipping, as ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_``: in place, over
every given parameter's gradient, one compiled call per dtype (kernels/clip.py)."""
import math
import numbers

import numpy as np

from fastlayers import _checks, backend
from fastlayers.module import Parameter


def _grads(parameters, owner):
    """The gradients (flat views) of ``parameters``, grouped by dtype; None gradients left out."""
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    params = list(parameters)
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"{owner} expects Parameters (e.g. model.parameters()), got "
                            f"{type(p).__name__}")
    groups = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault(p.grad.dtype, []).append(p.grad.reshape(-1))
    return [tuple(g) for g in groups.values()]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients so that their total ``norm_type``-norm (over all of them, as if they were
    one vector) is at most ``max_norm``; returns the total norm before clipping (a float).

    The scale is ``min(1, max_norm / (total_norm + 1e-6))``, as PyTorch's. ``norm_type``: a
    positive real or ``inf``. With ``error_if_nonfinite`` a NaN or infinite total norm raises
    RuntimeError before any gradient changes; otherwise the gradients are scaled by NaN, as in
    PyTorch."""
    owner = "clip_grad_norm_"
    max_norm = _checks.real("max_norm", max_norm, low=0.0)
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real) or not (
            norm_type > 0):
        raise ValueError(f"{owner}: norm_type must be a positive real number or inf, got "
                         f"{norm_type!r}")
    norm_type = float(norm_type)
    _checks.boolean(f"{owner}: error_if_nonfinite", error_if_nonfinite)
    groups = _grads(parameters, owner)
    ops = backend.ops()
    norms = [ops.grad_norm(g, norm_type) for g in groups]
    if not norms:
        return 0.0
    total = max(norms) if math.isinf(norm_type) else sum(n ** norm_type for n in norms) ** (
        1.0 / norm_type)
    if any(math.isnan(n) for n in norms):
        total = math.nan
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type:g} for gradients is non-finite "
                           f"({total}), so it cannot be clipped (error_if_nonfinite=True)")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:                     # NaN scales by NaN, as PyTorch's clamp does
        for g in groups:
            ops.scale(g, coef)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into [-clip_value, clip_value], in place (as PyTorch's)."""
    clip_value = _checks.real("clip_value", clip_value, low=0.0)
    ops = backend.ops()
    for g in _grads(parameters, "clip_grad_value_"):
        ops.clip_value(g, clip_value)
