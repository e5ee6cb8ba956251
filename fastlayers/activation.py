"""Activation modules: ReLU, LeakyReLU, Sigmoid, Tanh (elementwise), Softmax and LogSoftmax.

The elementwise ones carry an ``act`` code and ``slope`` so that :class:`~fastlayers.Sequential` can
fuse them into the preceding Linear (or BatchNorm); run on their own they call the activation kernels.
Each caches its output, from which its derivative follows.
"""
import numpy as np

from fastlayers import _checks, backend
from fastlayers.module import Module
from kernels import activations as _codes


class _Elementwise(Module):
    act = None
    slope = 0.0

    def forward(self, x):
        x = _checks.float_array(x, "input", owner=type(self).__name__)
        y = backend.ops().activation_forward(x, self.act, self.slope)
        self._cache = y
        return y

    def backward(self, grad_output):
        y = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=y.dtype,
                                owner=type(self).__name__)
        _checks.same_shape(y, g, type(self).__name__, "grad_output", "output")
        return backend.ops().activation_backward(g, y, self.act, self.slope)


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

    def extra_repr(self):
        return f"negative_slope={self.slope:g}"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    act = _codes.SIGMOID


class Tanh(_Elementwise):
    """tanh(x), elementwise."""
    act = _codes.TANH


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
