"""Layer normalisation: LayerNorm, which normalises each sample over its trailing dimensions."""
import math
import numbers

import numpy as np

from fastlayers import _checks, backend
from fastlayers.module import Module, Parameter


def _shape(normalized_shape):
    """``normalized_shape`` (an int or a non-empty sequence of ints >= 1) as a tuple."""
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    if not isinstance(normalized_shape, (tuple, list)):
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got "
                        f"{normalized_shape!r}")
    if not normalized_shape:
        raise ValueError("normalized_shape must have at least one dimension, got ()")
    return tuple(_checks.integer("normalized_shape", d, 1) for d in normalized_shape)


class LayerNorm(Module):
    """Layer normalisation over the last ``len(normalized_shape)`` dimensions of the input.

    y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias

    The mean and the (biased) variance are taken over each sample's trailing dimensions, those of
    ``normalized_shape``; the statistics come from the input in training and in evaluation alike.

    Args:
        normalized_shape: an int D (normalise over the last dimension, of size D) or a sequence of
            ints, the sizes of the trailing dimensions to normalise over.
        eps: added to the variance for stability (default 1e-5).
        elementwise_affine: learn a per-element ``weight`` (ones at first) and ``bias`` (zeros),
            both shaped ``normalized_shape`` (default True).
        bias: learn the additive ``bias`` too (default True; only with ``elementwise_affine``).
        dtype: float32 (default) or float64.

    Shape: input (*, *normalized_shape); output as input.

    Example::

        >>> norm = fastlayers.LayerNorm(256)
        >>> norm(np.random.rand(64, 128, 256).astype(np.float32)).shape
        (64, 128, 256)
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        super().__init__()
        self.normalized_shape = _shape(normalized_shape)
        self.eps = _checks.real("eps", eps, low=0.0)
        self.elementwise_affine = _checks.boolean("elementwise_affine", elementwise_affine)
        _checks.boolean("bias", bias)
        dtype = _checks.float_dtype(dtype)
        shape = self.normalized_shape
        self.weight = Parameter(np.ones(shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dtype)) if elementwise_affine and bias else None
        self._cache = None

    @property
    def dtype(self):
        """The dtype inputs must have: the parameters' (None without parameters: either)."""
        return self.weight.dtype if self.weight is not None else None

    def _affine(self, d, dtype):
        """The weight and bias as (D,) arrays (ones and zeros where the layer has none)."""
        w = self.weight.data.reshape(d) if self.weight is not None else np.ones(d, dtype)
        b = self.bias.data.reshape(d) if self.bias is not None else np.zeros(d, dtype)
        return w, b

    def forward(self, x):
        x = _checks.float_array(x, "input", dtype=self.dtype, owner="LayerNorm")
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape or x.ndim < k:
            want = ", ".join(["*"] + [str(d) for d in self.normalized_shape])
            raise ValueError(f"LayerNorm: given normalized_shape={self.normalized_shape}, expected "
                             f"input with shape ({want}), got shape {x.shape}")
        d = math.prod(self.normalized_shape)
        x2 = x.reshape(-1, d)
        w, b = self._affine(d, x.dtype)
        y, mean, rstd = backend.ops().layernorm_forward(x2, w, b, self.eps)
        self._cache = (x2, mean, rstd, x.shape)
        return y.reshape(x.shape)

    def backward(self, grad_output):
        x2, mean, rstd, shape = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=x2.dtype, owner="LayerNorm")
        if g.shape != shape:
            raise ValueError(f"LayerNorm: grad_output must have shape {shape}, got {g.shape}")
        d = x2.shape[1]
        w, _ = self._affine(d, x2.dtype)
        dw = self.weight.grad_buffer().reshape(d) if self.weight is not None else None
        db = self.bias.grad_buffer().reshape(d) if self.bias is not None else None
        dx = backend.ops().layernorm_backward(g.reshape(x2.shape), x2, w, mean, rstd, dw, db,
                                              self.needs_input_grad)
        return None if dx is None else dx.reshape(shape)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
