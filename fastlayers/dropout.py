"""Dropout and Dropout2d: inverted dropout with counter-based masks.

In training each forward call draws a fresh key from :func:`fastlayers.random.next_key` (so
``fastlayers.manual_seed`` fixes every mask, whatever the thread count) and keeps each element
(Dropout) or each whole channel (Dropout2d) with probability 1 - p, scaling kept values by
1 / (1 - p). In evaluation mode both are the identity. The backward reuses the forward's mask,
stored as one byte per element (per channel for Dropout2d).

The first dimension is the sample dimension: under data parallelism a mask element is drawn for
the element's place in the global batch (:func:`fastlayers.random.sample_placement`), so each rank
gets its own masks and all ranks together get the masks of one process running the global batch.
"""
import math

from fastlayers import _checks, backend, random
from fastlayers.module import Module


class _DropoutBase(Module):
    _ndims = None

    def __init__(self, p=0.5):
        super().__init__()
        self.p = _checks.real("p", p, low=0.0, high=1.0)
        self._cache = None

    def _rows(self, x):
        return x

    def _per_sample(self, x):
        """Mask decisions per sample (a sample is a slice of the first dimension)."""
        return x.size // x.shape[0]

    def forward(self, x):
        owner = type(self).__name__
        x = _checks.float_array(x, "input", ndim=self._ndims, owner=owner)
        if not self.training or self.p == 0.0:
            self._cache = (x.shape, x.dtype, None)
            return x
        seed, counter = random.next_key()
        placed = ()
        offset, stride = random.sample_placement()
        if (offset, stride) != (0, 1) and x.ndim and x.size:
            placed = (offset, stride, self._per_sample(x))
        y, mask = getattr(backend.ops(), self._fwd)(self._rows(x), self.p, seed, counter, *placed)
        self._cache = (x.shape, x.dtype, mask)
        return y.reshape(x.shape)

    def backward(self, grad_output):
        owner = type(self).__name__
        shape, dtype, mask = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=dtype, owner=owner)
        if g.shape != shape:
            raise ValueError(f"{owner}: grad_output must have shape {shape}, got {g.shape}")
        if mask is not None:
            g = getattr(backend.ops(), self._bwd)(self._rows(g), mask, self.p).reshape(shape)
        return g

    def extra_repr(self):
        return f"p={self.p:g}"


class Dropout(_DropoutBase):
    """Zeroes each element with probability ``p`` in training and scales the rest by 1 / (1 - p).

    Args:
        p: probability of an element being zeroed, in [0, 1] (default 0.5); p = 1 gives zeros.

    Shape: any; output as input. Identity in evaluation mode.

    Example::

        >>> fastlayers.manual_seed(0)
        >>> drop = fastlayers.Dropout(0.2)
        >>> y = drop(np.ones((4, 5), np.float32))   # entries are 0 or 1.25
    """
    _fwd, _bwd = "dropout_forward", "dropout_backward"


class Dropout2d(_DropoutBase):
    """Zeroes whole channels: each (n, c) plane of an (N, C, H, W) input, or each (n, c) row of an
    (N, C, L) input (as PyTorch treats 3-D input), with probability ``p``; the rest are scaled by
    1 / (1 - p).

    Args:
        p: probability of a channel being zeroed, in [0, 1] (default 0.5).

    Shape: input (N, C, H, W) or (N, C, L); output as input. Identity in evaluation mode.
    """
    _ndims = (3, 4)
    _fwd, _bwd = "dropout_channels_forward", "dropout_channels_backward"

    def _rows(self, x):
        return x.reshape(x.shape[0] * x.shape[1], math.prod(x.shape[2:]))

    def _per_sample(self, x):
        return x.shape[1]
