"""Losses: MSELoss, CrossEntropyLoss (logits), NLLLoss, BCELoss, BCEWithLogitsLoss, and the notebooks'
CrossEntropy (on probabilities).

``loss = criterion(input, target)`` returns a Python float and keeps the gradient, which one fused
kernel computes with the loss; ``criterion.backward()`` returns d(loss)/d(input) (times an optional
scalar ``grad_output``). ``reduction`` is ``"mean"`` (default) or ``"sum"``.
"""
import numpy as np

from fastlayers import _checks, backend
from fastlayers.grad_mode import is_grad_enabled
from fastlayers.module import _NO_GRAD, Module
from kernels.softmax import MEAN, SUM

_REDUCTIONS = {"mean": MEAN, "sum": SUM}


def _float_probabilities(target, x):
    """Whether ``target`` is meant as class probabilities (a float array of more than one
    dimension); float class indices get the integer-dtype error of the labels check instead."""
    return (isinstance(target, np.ndarray) and np.issubdtype(target.dtype, np.floating)
            and (target.ndim != 1 or target.shape == x.shape))


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction == "none":
            raise ValueError("reduction='none' is not supported: use 'mean' or 'sum'")
        self.reduction = _checks.choice("reduction", reduction, _REDUCTIONS)

    def _input(self, x, ndim=None):
        return _checks.float_array(x, "input", ndim=ndim, owner=type(self).__name__)

    def _float_target(self, x, target):
        t = _checks.float_array(target, "target", dtype=x.dtype, owner=type(self).__name__)
        _checks.same_shape(x, t, type(self).__name__)
        return t

    def _probabilities(self, a, name):
        """Check that ``a`` holds values in [0, 1] (NaN included in the failures, as PyTorch)."""
        if a.size and not (a.min() >= 0 and a.max() <= 1):
            raise ValueError(f"{type(self).__name__}: all elements of {name} should be between 0 "
                             f"and 1, got values in [{a.min():g}, {a.max():g}]"
                             + (" (use BCEWithLogitsLoss on unnormalised scores)"
                                if name == "input" else ""))

    def _finish(self, loss, grad, size):
        """The loss as a float; ``grad`` (None under no_grad) is kept for the backward; ``size`` is
        the input's number of elements."""
        self._cache = grad if grad is not None else _NO_GRAD
        if size == 0 and self.reduction == "mean":
            return float("nan")         # the mean of no values, as PyTorch
        return float(loss)

    def backward(self, grad_output=1.0):
        """d(loss)/d(input), times ``grad_output`` (a finite real number)."""
        g = self._saved()
        scale = _checks.real("grad_output", grad_output)
        return g if scale == 1.0 else g * g.dtype.type(scale)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean (or sum) of squared differences. input and target: same shape, same float dtype."""

    def forward(self, input, target):
        x = self._input(input)
        t = self._float_target(x, target)
        return self._finish(*backend.ops().mse_forward(x, t, _REDUCTIONS[self.reduction],
                                                       is_grad_enabled()), x.size)


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities in [0, 1]; logs clamped at -100 as in PyTorch."""

    def forward(self, input, target):
        x = self._input(input)
        t = self._float_target(x, target)
        self._probabilities(x, "input")
        self._probabilities(t, "target")
        return self._finish(*backend.ops().bce_forward(x, t, _REDUCTIONS[self.reduction],
                                                       is_grad_enabled()), x.size)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid followed by binary cross-entropy, computed stably from the logits."""

    def forward(self, input, target):
        x = self._input(input)
        t = self._float_target(x, target)
        return self._finish(*backend.ops().bce_logits_forward(x, t, _REDUCTIONS[self.reduction],
                                                              is_grad_enabled()), x.size)


class CrossEntropyLoss(_Loss):
    """Softmax and cross-entropy fused, on logits (N, C).

    target: class indices (N,) of an integer dtype in [0, C), or class probabilities (N, C) of the
    input's dtype. The gradient is softmax(input) - target (over N for ``"mean"``).
    """

    def forward(self, input, target):
        x = self._input(input, ndim=2)
        red = _REDUCTIONS[self.reduction]
        if _float_probabilities(target, x):
            t = self._float_target(x, target)
            return self._finish(*backend.ops().cross_entropy_probs_forward(
                x, t, red, is_grad_enabled()), x.size)
        labels = _checks.class_labels(target, x.shape[0], x.shape[1], type(self).__name__)
        return self._finish(*backend.ops().cross_entropy_forward(x, labels, red,
                                                                 is_grad_enabled()), x.size)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (N, C) (e.g. LogSoftmax's output) and class
    indices (N,)."""

    def forward(self, input, target):
        x = self._input(input, ndim=2)
        labels = _checks.class_labels(target, x.shape[0], x.shape[1], type(self).__name__)
        return self._finish(*backend.ops().nll_forward(x, labels, _REDUCTIONS[self.reduction],
                                                       is_grad_enabled()), x.size)


class CrossEntropy(_Loss):
    """The notebooks' cross-entropy on *probabilities* (N, C), e.g. a Softmax layer's output.

    loss = -mean_n log(max(p[n, y_n], eps)); target: class indices (N,) or one-hot/probability rows
    (N, C). For new code prefer :class:`CrossEntropyLoss` on logits, which is fused and stable.
    """

    def __init__(self, eps=1e-12, reduction="mean"):
        super().__init__(reduction)
        self.eps = _checks.real("eps", eps, low=0.0, low_open=True)

    def forward(self, input, target):
        p = self._input(input, ndim=2)
        if p.size and not (p.min() >= 0 and p.max() <= 1):
            raise ValueError("CrossEntropy: input must hold probabilities in [0, 1] "
                             "(use CrossEntropyLoss on logits)")
        clipped = np.maximum(p, p.dtype.type(self.eps))
        logp = np.log(clipped)
        red = _REDUCTIONS[self.reduction]
        if _float_probabilities(target, p):
            t = self._float_target(p, target)
            scale = 1.0 / p.shape[0] if red == MEAN and p.shape[0] else 1.0
            loss = -(t * logp).sum(dtype=np.float64) * scale
            glogp = (-t * p.dtype.type(scale)).astype(p.dtype)
        else:
            labels = _checks.class_labels(target, p.shape[0], p.shape[1], type(self).__name__)
            loss, glogp = backend.ops().nll_forward(logp, labels, red, True)
        if not is_grad_enabled():
            return self._finish(loss, None, p.size)
        # d log(max(p, eps)) / dp = 1/p where p > eps, else 0.
        return self._finish(loss, np.where(p > self.eps, glogp / clipped, p.dtype.type(0)), p.size)

    def extra_repr(self):
        return f"eps={self.eps:g}, reduction={self.reduction!r}"
