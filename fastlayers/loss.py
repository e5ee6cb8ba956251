"""Losses: MSELoss, L1Loss, HuberLoss, SmoothL1Loss, CrossEntropyLoss (logits), NLLLoss, BCELoss,
BCEWithLogitsLoss, and the notebooks' CrossEntropy (on probabilities).

``loss = criterion(input, target)`` returns the loss and keeps its gradient, which one fused kernel
computes with the loss; ``criterion.backward(grad_output)`` returns d(loss)/d(input) times the
upstream gradient. ``reduction`` is ``"mean"`` (default) or ``"sum"``, which give a Python float
and take a real ``grad_output`` (default 1), or ``"none"``, which gives the per-element losses as
an array and takes a ``grad_output`` array of that shape (a number only when the loss has one
element: PyTorch's "grad can be implicitly created only for scalar outputs").
"""
import math
import numbers

import numpy as np

from fastlayers import _checks, backend
from fastlayers.grad_mode import is_grad_enabled
from fastlayers.module import _NO_GRAD, Module
from kernels.softmax import MEAN, NONE, SUM

_REDUCTIONS = {"mean": MEAN, "sum": SUM, "none": NONE}
_INT64 = np.iinfo(np.int64)


def _float_probabilities(target, x):
    """Whether ``target`` is meant as class probabilities (a float array with the input's number
    of dimensions); float class indices get the integer-dtype error of the labels check instead."""
    return (isinstance(target, np.ndarray) and target.dtype.kind == "f"
            and target.ndim == x.ndim)


def _weight_arg(owner, name, value, ndim=None):
    """``value`` checked as a weight: None, or a float32/float64 ndarray (``ndim``-D if given)."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray) or value.dtype not in _checks.FLOAT_DTYPES:
        what = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise TypeError(f"{owner}: {name} must be None or a float32/float64 numpy.ndarray, "
                        f"got {what}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{owner}: {name} must be {ndim}-D (one value per class), got shape "
                         f"{value.shape}")
    return value if value.flags.c_contiguous else np.ascontiguousarray(value)


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _checks.choice("reduction", reduction, _REDUCTIONS)

    @property
    def _code(self):
        return _REDUCTIONS[self.reduction]

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

    def _broadcast_weight(self, name, x):
        """Buffer ``name`` (None or an array that broadcasts to the input's shape) as a contiguous
        array of the input's shape and dtype, for the pointwise kernels."""
        owner = type(self).__name__
        w = _weight_arg(owner, name, getattr(self, name))
        if w is None:
            return None
        try:
            fits = np.broadcast_shapes(w.shape, x.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{owner}: {name} of shape {w.shape} does not broadcast to the "
                             f"input's shape {x.shape}")
        return np.ascontiguousarray(np.broadcast_to(w.astype(x.dtype, copy=False), x.shape))

    def _finish(self, loss, grad, empty, class_axis=None):
        """The loss: a float, or under ``"none"`` the array of per-element losses. ``grad`` (None
        under no_grad) is kept for the backward, with the loss's shape and the input's axis that
        the loss does not have (``class_axis``), along which ``grad_output`` broadcasts. ``empty``:
        the input has no elements."""
        if grad is None:
            self._cache = _NO_GRAD
        else:
            self._cache = (grad, np.shape(loss) if self.reduction == "none" else (), class_axis)
        if self.reduction == "none":
            return loss
        if empty and self.reduction == "mean":
            return float("nan")         # the mean of no values, as PyTorch
        return float(loss)

    def backward(self, grad_output=1.0):
        """d(loss)/d(input), times ``grad_output``: a finite real number for ``"mean"`` and
        ``"sum"``; for ``"none"`` an array of the loss's shape and the input's dtype (a number
        only when the loss has one element)."""
        grad, shape, class_axis = self._saved()
        if self.reduction == "none":
            g = self._grad_array(grad_output, shape, grad.dtype)
            return grad * (g if class_axis is None else np.expand_dims(g, class_axis))
        if isinstance(grad_output, np.ndarray) and grad_output.shape == ():
            grad_output = grad_output[()]
        scale = _checks.real("grad_output", grad_output)
        return grad if scale == 1.0 else grad * grad.dtype.type(scale)

    def _grad_array(self, grad_output, shape, dtype):
        owner = type(self).__name__
        if isinstance(grad_output, np.ndarray):
            if grad_output.dtype != dtype:
                raise TypeError(f"{owner}.backward: grad_output must have the input's dtype "
                                f"{dtype}, got {grad_output.dtype}")
            if grad_output.shape != shape:
                raise ValueError(f"{owner}.backward: grad_output must have shape {shape} (the "
                                 f"loss's, reduction='none'), got {grad_output.shape}")
            return grad_output
        if isinstance(grad_output, bool) or not isinstance(grad_output, numbers.Real):
            raise TypeError(f"{owner}.backward: grad_output must be a numpy.ndarray of the loss's "
                            f"shape {shape} (reduction='none'), got {type(grad_output).__name__}")
        if math.prod(shape) != 1:
            raise RuntimeError(f"{owner}.backward: grad can be implicitly created only for scalar "
                               f"outputs; with reduction='none' the loss has shape {shape}: pass "
                               f"backward(grad_output) an array of that shape")
        return np.full(shape, _checks.real("grad_output", grad_output), dtype)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class _Pointwise(_Loss):
    """A loss of elementwise differences between input and target of one shape and dtype."""

    _kernel = None      # the kernel's name

    def _kernel_args(self):
        return ()

    def forward(self, input, target):
        x = self._input(input)
        t = self._float_target(x, target)
        fn = getattr(backend.ops(), self._kernel)
        return self._finish(*fn(x, t, self._code, is_grad_enabled(), *self._kernel_args()),
                            x.size == 0)


class MSELoss(_Pointwise):
    """Mean (or sum) of squared differences, ``(input - target)^2``.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Shape:
        input, target: any shape, the same for both, of one float dtype; output: a float, or
        under ``'none'`` an array of the input's shape.
    """

    _kernel = "mse_forward"


class L1Loss(_Pointwise):
    """Mean (or sum) of absolute differences, ``|input - target|``; the gradient at a zero
    difference is 0, as PyTorch's.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Shape:
        As :class:`MSELoss`.
    """

    _kernel = "l1_forward"


class HuberLoss(_Pointwise):
    """Huber loss: ``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``, with
    ``d = input - target``.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        delta: where the loss turns from quadratic to linear (> 0). Default: 1.0.

    Shape:
        As :class:`MSELoss`.
    """

    _kernel = "huber_forward"

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = _checks.real("delta", delta, low=0.0, low_open=True)

    def _kernel_args(self):
        return (self.delta,)

    def extra_repr(self):
        return f"reduction={self.reduction!r}, delta={self.delta:g}"


class SmoothL1Loss(_Pointwise):
    """Smooth L1 loss: ``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``, with
    ``d = input - target``; ``beta = 0`` is :class:`L1Loss`, as PyTorch.

    Args:
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        beta: where the loss turns from quadratic to linear (>= 0). Default: 1.0.

    Shape:
        As :class:`MSELoss`.
    """

    _kernel = "smooth_l1_forward"

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = _checks.real("beta", beta, low=0.0)

    def _kernel_args(self):
        return (self.beta,)

    def extra_repr(self):
        return f"reduction={self.reduction!r}, beta={self.beta:g}"


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities in [0, 1], ``-w (t log p + (1 - t) log(1 - p))``;
    logs clamped at -100 as in PyTorch.

    Args:
        weight: a rescaling weight of each element's loss, a float array that broadcasts to the
            input's shape (a buffer, cast to the input's dtype). Default: None.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'`` (``'mean'`` divides by the number of
            elements, weighted or not).

    Shape:
        As :class:`MSELoss`; input and target in [0, 1].
    """

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", _weight_arg("BCELoss", "weight", weight))

    def forward(self, input, target):
        x = self._input(input)
        t = self._float_target(x, target)
        w = self._broadcast_weight("weight", x)
        self._probabilities(x, "input")
        self._probabilities(t, "target")
        return self._finish(*backend.ops().bce_forward(x, t, self._code, is_grad_enabled(), w),
                            x.size == 0)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid followed by binary cross-entropy, computed stably from the logits:
    ``-w (pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))``.

    Args:
        weight: a rescaling weight of each element's loss, broadcast to the input's shape.
            Default: None.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        pos_weight: a weight of the positive term, broadcast to the input's shape (typically one
            per class, the last axis). Default: None.

    Both weights are float array buffers, cast to the input's dtype.

    Shape:
        As :class:`MSELoss`; target in [0, 1].
    """

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", _weight_arg("BCEWithLogitsLoss", "weight", weight))
        self.register_buffer("pos_weight",
                             _weight_arg("BCEWithLogitsLoss", "pos_weight", pos_weight))

    def forward(self, input, target):
        x = self._input(input)
        t = self._float_target(x, target)
        w = self._broadcast_weight("weight", x)
        pw = self._broadcast_weight("pos_weight", x)
        return self._finish(*backend.ops().bce_logits_forward(x, t, self._code, is_grad_enabled(),
                                                              w, pw), x.size == 0)


class _ClassLoss(_Loss):
    """A loss over a class axis: input (C,), (N, C) or (N, C, d1, ..., dk), class indices of the
    input's shape without the class axis (or, for CrossEntropyLoss, probabilities of the input's
    shape); optional class weights (the buffer ``weight``, as PyTorch's _WeightedLoss) and an
    ``ignore_index`` whose targets count for nothing."""

    def __init__(self, weight, ignore_index, reduction):
        super().__init__(reduction)
        owner = type(self).__name__
        self.register_buffer("weight", _weight_arg(owner, "weight", weight, ndim=1))
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f"{owner}: ignore_index must be an integer, got {ignore_index!r}")
        if not _INT64.min <= ignore_index <= _INT64.max:
            raise ValueError(f"{owner}: ignore_index must fit in int64, got {ignore_index}")
        self.ignore_index = int(ignore_index)

    def _layout(self, input):
        """The checked input; its kernel view ((N, C) or (N, C, S)); the number of classes; the
        shape of class-index targets (and of the loss under 'none'); the class axis."""
        owner = type(self).__name__
        x = self._input(input)
        if x.ndim == 0:
            raise ValueError(f"{owner}: input must be (C,), (N, C) or (N, C, d1, ...), got a 0-d "
                             f"array")
        axis = 0 if x.ndim == 1 else 1
        c = x.shape[axis]
        if c == 0:
            raise ValueError(f"{owner}: input must have at least one class (dimension {axis}), "
                             f"got shape {x.shape}")
        if x.ndim == 1:
            return x, x.reshape(1, c), c, (), axis
        view = x if x.ndim == 2 else x.reshape(x.shape[0], c, math.prod(x.shape[2:]))
        return x, view, c, x.shape[:1] + x.shape[2:], axis

    def _class_weight(self, c, dtype):
        owner = type(self).__name__
        w = _weight_arg(owner, "weight", self.weight, ndim=1)
        if w is None:
            return None
        if w.shape != (c,):
            raise ValueError(f"{owner}: weight must hold one value per class, expected shape "
                             f"({c},), got {w.shape}")
        return w.astype(dtype, copy=False)

    def _labels(self, target, shape, c):
        labels = _checks.class_labels(target, shape, c, type(self).__name__, self.ignore_index)
        if len(shape) <= 1:
            return labels.reshape(-1)
        return labels.reshape(shape[0], math.prod(shape[1:]))

    def _result(self, loss, grad, x, shape, axis):
        """The kernel's loss and gradient back in the shapes of the loss and the input."""
        if self.reduction == "none":
            loss = loss.reshape(shape)
        return self._finish(loss, None if grad is None else grad.reshape(x.shape), x.size == 0,
                            axis)


class CrossEntropyLoss(_ClassLoss):
    """Softmax and cross-entropy fused, on logits; the class axis is 1 (0 for unbatched input).

    With class indices ``y``: ``l_n = (1 - eps) w[y_n] (-log p[n, y_n]) + (eps / C) sum_c w[c]
    (-log p[n, c])`` (0 where ``y_n == ignore_index``); with class probabilities ``t``:
    ``l_n = -sum_c w[c] ((1 - eps) t[n, c] + eps / C) log p[n, c]``, where ``p`` is the softmax of
    the input and ``eps`` the label smoothing (PyTorch's formulas).

    Args:
        weight: a weight per class, a 1-D float array of length C (a buffer, cast to the input's
            dtype). Default: None.
        ignore_index: a class-index target value that is ignored (loss and gradient 0, left out of
            the mean); with probability targets it must stay -100, as PyTorch. Default: -100.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. ``'mean'`` divides by the summed weights
            of the targets not ignored (class indices; NaN when all are ignored) or by the number
            of samples (probabilities).
        label_smoothing: in [0, 1], the share of the target spread uniformly over the classes.
            Default: 0.0.

    Shape:
        input: (C,), (N, C) or (N, C, d1, ..., dk) of a float dtype; target: class indices of an
        integer dtype, () / (N,) / (N, d1, ..., dk), each in [0, C) or ``ignore_index``; or class
        probabilities of the input's shape and dtype. Output: a float, or under ``'none'`` an
        array of the class-index target's shape.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, ignore_index, reduction)
        self.label_smoothing = _checks.real("label_smoothing", label_smoothing, low=0.0, high=1.0)

    def forward(self, input, target):
        x, view, c, shape, axis = self._layout(input)
        w = self._class_weight(c, x.dtype)
        ops, need = backend.ops(), is_grad_enabled()
        if _float_probabilities(target, x):
            t = self._float_target(x, target)
            if self.ignore_index != -100:
                raise ValueError(f"CrossEntropyLoss: ignore_index={self.ignore_index} applies to "
                                 f"class-index targets only, not to class probabilities (PyTorch "
                                 f"refuses it too); leave it at -100")
            loss, grad = ops.cross_entropy_probs_forward(view, t.reshape(view.shape), self._code,
                                                         need, w, self.label_smoothing)
        else:
            labels = self._labels(target, shape, c)
            loss, grad = ops.cross_entropy_forward(view, labels, self._code, need, w,
                                                   self.ignore_index, self.label_smoothing)
        return self._result(loss, grad, x, shape, axis)

    def extra_repr(self):
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing:g}")


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of log-probabilities (e.g. LogSoftmax's output) and class indices:
    ``l_n = -w[y_n] input[n, y_n]`` (0 where ``y_n == ignore_index``).

    Args:
        weight: a weight per class, a 1-D float array of length C. Default: None.
        ignore_index: a target value that is ignored. Default: -100.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``; ``'mean'`` divides by the summed weights
            of the targets not ignored (NaN when all are ignored).

    Shape:
        input: (C,), (N, C) or (N, C, d1, ..., dk); target: class indices, () / (N,) /
        (N, d1, ..., dk). Output: a float, or under ``'none'`` an array of the target's shape.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, ignore_index, reduction)

    def forward(self, input, target):
        x, view, c, shape, axis = self._layout(input)
        w = self._class_weight(c, x.dtype)
        labels = self._labels(target, shape, c)
        loss, grad = backend.ops().nll_forward(view, labels, self._code, is_grad_enabled(), w,
                                               self.ignore_index)
        return self._result(loss, grad, x, shape, axis)

    def extra_repr(self):
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class CrossEntropy(_Loss):
    """The notebooks' cross-entropy on *probabilities* (N, C), e.g. a Softmax layer's output.

    loss = -mean_n log(max(p[n, y_n], eps)); target: class indices (N,) or one-hot/probability rows
    (N, C). For new code prefer :class:`CrossEntropyLoss` on logits, which is fused and stable.

    Args:
        eps: the floor of the probabilities under the log (> 0). Default: 1e-12.
        reduction: ``'none'`` (one loss per row) | ``'mean'`` | ``'sum'``.
    """

    def __init__(self, eps=1e-12, reduction="mean"):
        super().__init__(reduction)
        self.eps = _checks.real("eps", eps, low=0.0, low_open=True)

    def forward(self, input, target):
        p = self._input(input, ndim=2)
        if p.size and not (p.min() >= 0 and p.max() <= 1):
            raise ValueError("CrossEntropy: input must hold probabilities in [0, 1] "
                             "(use CrossEntropyLoss on logits)")
        probabilities = _float_probabilities(target, p)
        if probabilities:
            t = self._float_target(p, target)
        else:
            labels = _checks.class_labels(target, p.shape[0], p.shape[1], type(self).__name__)
        clipped = np.maximum(p, p.dtype.type(self.eps))
        logp = np.log(clipped)
        if probabilities:
            losses = -(t * logp).sum(axis=1, dtype=np.float64)
            scale = 1.0 / p.shape[0] if self._code == MEAN and p.shape[0] else 1.0
            loss = losses.astype(p.dtype) if self._code == NONE else losses.sum() * scale
            glogp = (-t * p.dtype.type(scale)).astype(p.dtype)
        else:
            loss, glogp = backend.ops().nll_forward(logp, labels, self._code, True)
        if not is_grad_enabled():
            return self._finish(loss, None, p.size == 0)
        # d log(max(p, eps)) / dp = 1/p where p > eps, else 0.
        return self._finish(loss, np.where(p > self.eps, glogp / clipped, p.dtype.type(0)),
                            p.size == 0, 1)

    def extra_repr(self):
        return f"eps={self.eps:g}, reduction={self.reduction!r}"
