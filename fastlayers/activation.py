"""Activation modules: elementwise (ReLU, LeakyReLU, Sigmoid, Tanh, Hardtanh, ReLU6, GELU, SiLU,
ELU, Softplus), Softmax and LogSoftmax.

The elementwise ones carry an ``act`` code and its ``params`` (kernels/activations.py) so that
:class:`~fastlayers.Sequential` can fuse them into the preceding Linear (and ReLU/LeakyReLU into a
BatchNorm); run on their own they call the activation kernels. Each caches what its derivative
follows from: its output, or its input for the codes in ``kernels.activations.NEEDS_INPUT``.
"""
import numpy as np

from fastlayers import _checks, backend
from fastlayers.module import Module
from kernels import activations as _codes


class _Elementwise(Module):
    act = None
    params = _codes.NO_PARAMS

    def forward(self, x):
        x = _checks.float_array(x, "input", owner=type(self).__name__)
        act, params = self.act, self.params
        y = backend.ops().activation_forward(x, act, params)
        self._cache = (_codes.saved_for_backward(act, x, y), act, params)
        return y

    def backward(self, grad_output):
        s, act, params = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=s.dtype,
                                owner=type(self).__name__)
        _checks.same_shape(s, g, type(self).__name__, "grad_output", "output")
        return backend.ops().activation_backward(g, s, act, params)


class ReLU(_Elementwise):
    """max(x, 0), elementwise. Shape: any; output as input."""
    act = _codes.RELU


class LeakyReLU(_Elementwise):
    """x if x > 0 else negative_slope * x (``negative_slope`` > 0, default 0.01)."""
    act = _codes.LEAKY_RELU

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.slope = _checks.real("negative_slope", negative_slope, low=0.0, low_open=True)

    @property
    def negative_slope(self):
        return self.slope

    @property
    def params(self):
        return (self.slope, 0.0)

    def extra_repr(self):
        return f"negative_slope={self.slope:g}"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    act = _codes.SIGMOID


class Tanh(_Elementwise):
    """tanh(x), elementwise."""
    act = _codes.TANH


class Hardtanh(_Elementwise):
    """Applies the HardTanh function elementwise: ``max_val`` if x > max_val, ``min_val`` if
    x < min_val, else x (NaN stays NaN).

    Args:
        min_val: minimum value of the linear region. Default: -1.
        max_val: maximum value of the linear region, greater than ``min_val``. Default: 1.

    Shape:
        - Input: (*), any number of dimensions.
        - Output: (*), the shape of the input.

    The gradient is 1 strictly inside (min_val, max_val) and 0 elsewhere, at the two boundaries
    and at NaN included (as ``torch.nn.Hardtanh``).
    """
    act = _codes.HARDTANH

    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        self.min_val = _checks.real("min_val", min_val)
        self.max_val = _checks.real("max_val", max_val)
        if self.max_val <= self.min_val:
            raise ValueError(f"{type(self).__name__}: max_val ({self.max_val:g}) must be greater "
                             f"than min_val ({self.min_val:g})")

    @property
    def params(self):
        return (self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    """Applies min(max(0, x), 6) elementwise: :class:`Hardtanh` with min_val 0 and max_val 6.

    Shape:
        - Input: (*), any number of dimensions.
        - Output: (*), the shape of the input.
    """

    def __init__(self):
        super().__init__(0.0, 6.0)

    def extra_repr(self):
        return ""


class GELU(_Elementwise):
    """Applies the Gaussian Error Linear Unit elementwise: x * Phi(x), Phi the cumulative
    distribution function of the standard normal distribution, x/2 (1 + erf(x / sqrt 2)).

    Args:
        approximate: ``'none'`` (default) for the exact form; ``'tanh'`` for
            0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).

    Shape:
        - Input: (*), any number of dimensions.
        - Output: (*), the shape of the input.
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if not isinstance(approximate, str):
            raise TypeError(f"approximate must be a str, 'none' or 'tanh', got {approximate!r}")
        self.approximate = _checks.choice("approximate", approximate, ("none", "tanh"))

    @property
    def act(self):
        return _codes.GELU_TANH if self.approximate == "tanh" else _codes.GELU

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(_Elementwise):
    """Applies the Sigmoid Linear Unit (swish) elementwise: x * sigmoid(x), as x / (1 + exp(-x)).

    Shape:
        - Input: (*), any number of dimensions.
        - Output: (*), the shape of the input.
    """
    act = _codes.SILU


class ELU(_Elementwise):
    """Applies the Exponential Linear Unit elementwise: x if x > 0 else alpha * (exp(x) - 1)
    (computed with expm1).

    Args:
        alpha: the value the negative part tends to, as -alpha. Default: 1.

    Shape:
        - Input: (*), any number of dimensions.
        - Output: (*), the shape of the input.
    """
    act = _codes.ELU

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = _checks.real("alpha", alpha)

    @property
    def params(self):
        return (self.alpha, 0.0)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Softplus(_Elementwise):
    """Applies 1/beta * log(1 + exp(beta * x)) elementwise; x itself where beta * x > threshold
    (for numerical stability, as ``torch.nn.Softplus``).

    Args:
        beta: the beta of the formula, > 0. Default: 1.
        threshold: above this value of beta * x the function is linear. Default: 20.

    Shape:
        - Input: (*), any number of dimensions.
        - Output: (*), the shape of the input.
    """
    act = _codes.SOFTPLUS

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = _checks.real("beta", beta, low=0.0, low_open=True)
        self.threshold = _checks.real("threshold", threshold)

    @property
    def params(self):
        return (self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class _RowWise(Module):
    """Softmax-like op along ``dim``: the kernels work on the last axis of a 2-D array, so other
    dims are moved last and flattened."""

    _fwd = _bwd = None

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = _checks.integer("dim", dim, minimum=-(1 << 31))

    def _axis(self, x):
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f"{type(self).__name__}: dim={self.dim} is out of range for a "
                             f"{x.ndim}-D input of shape {x.shape}")
        return self.dim % x.ndim

    @staticmethod
    def _rows(a, axis):
        moved = np.moveaxis(a, axis, -1)
        return np.ascontiguousarray(moved).reshape(-1, a.shape[axis]), moved.shape

    def forward(self, x):
        x = _checks.float_array(x, "input", owner=type(self).__name__)
        if x.ndim == 0:
            raise ValueError(f"{type(self).__name__}: input must have at least 1 dimension")
        axis = self._axis(x)
        rows, moved = self._rows(x, axis)
        y = getattr(backend.ops(), self._fwd)(rows)
        self._cache = (y, moved, axis)
        return np.ascontiguousarray(np.moveaxis(y.reshape(moved), -1, axis))

    def backward(self, grad_output):
        y, moved, axis = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=y.dtype, owner=type(self).__name__)
        if np.moveaxis(g, axis, -1).shape != moved:
            raise ValueError(f"{type(self).__name__}: grad_output shape {g.shape} does not match "
                             f"the output")
        dx = getattr(backend.ops(), self._bwd)(self._rows(g, axis)[0], y)
        return np.ascontiguousarray(np.moveaxis(dx.reshape(moved), -1, axis))

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_RowWise):
    """exp(x_i) / sum_j exp(x_j) along ``dim`` (default -1), stable for inputs of any magnitude."""
    _fwd, _bwd = "softmax_forward", "softmax_backward"


class LogSoftmax(_RowWise):
    """log(softmax(x)) along ``dim`` (default -1), computed as x - logsumexp(x)."""
    _fwd, _bwd = "log_softmax_forward", "log_softmax_backward"
