"""Embedding: a lookup table of vectors indexed by integers (PyTorch's ``torch.nn.modules.sparse``).

The backward adds each position's output gradient into the weight row it read; the indices get no
gradient (they are not differentiable), so ``backward`` returns None, and a ``Sequential`` whose
first layer is an Embedding stops there.
"""
import numbers

import numpy as np

from fastlayers import _checks, backend, init
from fastlayers.module import Module, Parameter
from kernels.embedding import NO_PADDING

INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def _padding_idx(padding_idx, num_embeddings):
    """``padding_idx`` in [0, num_embeddings) (a negative one counts from the end), or None."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
        raise TypeError(f"padding_idx must be an integer or None, got {padding_idx!r}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"padding_idx must be within num_embeddings, in [-{num_embeddings}, "
                         f"{num_embeddings}), got {padding_idx}")
    return int(padding_idx) % num_embeddings


def _weights(name, value):
    """``value`` checked as a 2-D float32/float64 array of embeddings."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(value).__name__}")
    _checks.float_dtype(value.dtype, f"{name} dtype")
    if value.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_embeddings, embedding_dim), got shape "
                         f"{value.shape}")
    return value


class Embedding(Module):
    """A lookup table: row ``i`` of ``weight`` is the embedding of index ``i``.

    Args:
        num_embeddings: V, the number of embeddings (indices run over 0 .. V - 1).
        embedding_dim: D, the size of each embedding vector.
        padding_idx: an index whose row receives no gradient, so it stays a fixed "pad"; zeros at
            first (it can be set to another value). A negative value counts from the end, as
            ``padding_idx + num_embeddings``. Default None.
        dtype: float32 (default) or float64.

    Attributes: ``weight`` (num_embeddings, embedding_dim), drawn from N(0, 1) (the generator that
    ``fastlayers.manual_seed`` seeds); ``freeze``: when True, the backward adds nothing into
    ``weight`` and its ``grad`` stays None, so optimizers skip it (PyTorch's
    ``weight.requires_grad = False``; set it to False to train the weight).

    Shape: input (*), int32 or int64 indices, each in [0, num_embeddings); output (*, D).

    PyTorch's ``max_norm``, ``norm_type``, ``scale_grad_by_freq`` and ``sparse`` are not supported.

    Example::

        >>> emb = fastlayers.Embedding(10, 3, padding_idx=0)
        >>> emb(np.array([[0, 2, 0, 5]])).shape
        (1, 4, 3)
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32,
                 _weight=None, _freeze=False):
        super().__init__()
        self.num_embeddings = _checks.integer("num_embeddings", num_embeddings, 1)
        self.embedding_dim = _checks.integer("embedding_dim", embedding_dim, 1)
        self.padding_idx = _padding_idx(padding_idx, self.num_embeddings)
        dtype = _checks.float_dtype(dtype)
        self.freeze = _checks.boolean("freeze", _freeze)
        shape = (self.num_embeddings, self.embedding_dim)
        if _weight is None:
            weight = init.normal_(np.empty(shape, dtype))
            if self.padding_idx is not None:
                weight[self.padding_idx] = 0
        else:
            weight = _weights("_weight", _weight)
            if weight.shape != shape:
                raise ValueError(f"_weight has shape {weight.shape}, but num_embeddings and "
                                 f"embedding_dim give {shape}")
        self.weight = Parameter(weight)
        if self.freeze:
            self.weight.grad = None
        self._cache = None

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding whose weight is ``embeddings`` (V, D), float32 or float64: the array
        itself when it is C-contiguous (as PyTorch shares the tensor), else a contiguous copy.

        Args:
            embeddings: the (num_embeddings, embedding_dim) weights.
            freeze: the ``freeze`` attribute: True (default) keeps the weight out of training.
            padding_idx: as for the constructor; its row is left as ``embeddings`` has it.
        """
        embeddings = _weights("embeddings", embeddings)
        _checks.boolean("freeze", freeze)
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx=padding_idx, dtype=embeddings.dtype,
                   _weight=embeddings, _freeze=freeze)

    def _indices(self, x):
        """The indices ``x`` checked (int32/int64, each in [0, V)), as a fresh int64 array."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"Embedding: input must be a numpy.ndarray of indices, got "
                            f"{type(x).__name__}")
        if x.dtype not in INDEX_DTYPES:
            raise TypeError(f"Embedding: input must hold indices of dtype int32 or int64, got "
                            f"{x.dtype}")
        v = self.weight.shape[0]
        if x.size and (x.min() < 0 or x.max() >= v):
            bad = x[(x < 0) | (x >= v)][0]
            raise IndexError(f"Embedding: index out of range in self: input holds {bad}, "
                             f"expected indices in [0, {v})")
        # A copy, so that the backward sees the indices checked here whatever happens to x.
        return np.array(x, dtype=np.int64, order="C").reshape(-1)

    def forward(self, x):
        w = self.weight.data
        if w.ndim != 2:
            raise RuntimeError(f"Embedding: weight must be 2-D, got shape {w.shape}")
        indices = self._indices(x)
        y = backend.ops().embedding_forward(w, indices)
        self._cache = (indices, x.shape, w.shape, w.dtype)
        return y.reshape(x.shape + (w.shape[1],))

    def backward(self, grad_output):
        indices, shape, wshape, wdtype = self._saved()
        w = self.weight.data
        if w.shape != wshape or w.dtype != wdtype:
            raise RuntimeError(f"Embedding: weight is {w.shape} {w.dtype} now, {wshape} {wdtype} "
                               f"at the forward; run the forward again")
        g = _checks.float_array(grad_output, "grad_output", dtype=wdtype, owner="Embedding")
        if g.shape != shape + (wshape[1],):
            raise ValueError(f"Embedding: grad_output must have shape {shape + (wshape[1],)}, got "
                             f"{g.shape}")
        if not self.freeze:
            pad = NO_PADDING if self.padding_idx is None else self.padding_idx
            backend.ops().embedding_backward(g.reshape(-1, wshape[1]), indices, pad,
                                             self.weight.grad_buffer())
        return None

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
