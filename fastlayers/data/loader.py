"""Mini-batches over in-memory arrays, in this process (no workers: forking after OpenMP hangs)."""
import numpy as np

from fastlayers import _checks, backend
from fastlayers.random import generator

__all__ = ["DataLoader"]


class DataLoader:
    """Iterate over ``(x, y)`` in mini-batches, optionally reshuffled every epoch.

    Each batch gathers only its own rows into a new C-contiguous array of ``dtype``: uint8 images
    are scaled to [0, 1] (``x / 255``), float inputs are cast unchanged. Every yielded array is
    fresh (never a buffer reused by the next batch), so a caller may keep or modify it; the whole
    set is never copied per epoch.

    Args:
        x: inputs, (N, ...) with at least 2 dimensions; uint8 (images) or floating point.
        y: integer class labels, (N,).
        batch_size: samples per batch (>= 1). The last batch may be smaller unless ``drop_last``.
        shuffle: draw a new permutation at the start of every epoch (every ``iter()``), from
            :func:`fastlayers.random.generator`, so ``fastlayers.manual_seed`` makes it reproducible.
        drop_last: skip the final batch when it has fewer than ``batch_size`` samples.
        sampler: the indices of each epoch, drawn at every ``iter()`` (an iterable with a
            ``len()``, e.g. a :class:`~fastlayers.data.DistributedSampler`); batches are taken in
            its order. Not with ``shuffle`` (the sampler orders the samples).
        dtype: float32 (default) or float64, the dtype of the yielded inputs.
        flatten: yield inputs as (B, prod(x.shape[1:])).

    Shape:
        - x (N, H, W), e.g. MNIST: batches (B, 1, H, W) for CNNs, or (B, H*W) with ``flatten``.
        - x (N, D) or (N, C, H, W): batches (B, D) or (B, C, H, W) (flattened with ``flatten``).
        - labels: (B,) int64.

    Example::

        >>> ds = fastlayers.data.load_dataset("mnist-10k")
        >>> loader = DataLoader(ds.x_train, ds.y_train, batch_size=128, shuffle=True, flatten=True)
        >>> for xb, yb in loader:     # xb float32 (128, 784) in [0, 1], yb int64 (128,)
        ...     pass
    """

    def __init__(self, x, y, batch_size=64, shuffle=False, drop_last=False, dtype=np.float32,
                 flatten=False, sampler=None):
        owner = "DataLoader"
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{owner}: x must be a numpy.ndarray, got {type(x).__name__}")
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{owner}: y must be a numpy.ndarray, got {type(y).__name__}")
        if x.ndim < 2:
            raise ValueError(f"{owner}: x must have a sample dimension and at least one more, "
                             f"got shape {x.shape}")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{owner}: x must be uint8 (images, scaled by 1/255) or floating "
                            f"point, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"{owner}: y must hold integer class labels, got dtype {y.dtype}")
        if y.ndim != 1:
            raise ValueError(f"{owner}: y must have shape (N,), got {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{owner}: x has {len(x)} samples but y has {len(y)} labels")
        for flag, value in (("shuffle", shuffle), ("drop_last", drop_last), ("flatten", flatten)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{owner}: {flag} must be True or False, got {value!r}")
        if sampler is not None:
            if shuffle:
                raise ValueError(f"{owner}: sampler option is mutually exclusive with shuffle")
            if not hasattr(sampler, "__iter__") or not hasattr(sampler, "__len__"):
                raise TypeError(f"{owner}: sampler must be an iterable of indices with a len(), "
                                f"got {type(sampler).__name__}")
        self.sampler = sampler
        self.batch_size = _checks.integer("DataLoader: batch_size", batch_size, minimum=1)
        self.dtype = _checks.float_dtype(dtype, name="DataLoader: dtype")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.flatten = bool(flatten)
        self.x = x
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self._scale = x.dtype == np.uint8
        sample = x.shape[1:]
        if self.flatten:
            self._sample_shape = (int(np.prod(sample, dtype=np.int64)),)
        elif x.ndim == 3:
            self._sample_shape = (1,) + sample  # (H, W) images -> one channel
        else:
            self._sample_shape = sample

    def __len__(self):
        """The number of batches in one epoch."""
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_samples(self):
        """The samples one epoch visits (the sampler's length, if there is one)."""
        return len(self.x) if self.sampler is None else len(self.sampler)

    def __iter__(self):
        # The permutation is drawn here, when the epoch starts, not lazily at the first batch.
        if self.sampler is not None:
            return self._batches(self._sampled())
        order = generator().permutation(len(self.x)) if self.shuffle else None
        return self._batches(order)

    def _sampled(self):
        """The sampler's indices for this epoch, checked (the gather does not bounds-check)."""
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        if order.size != len(self.sampler):
            raise ValueError(f"DataLoader: the sampler yielded {order.size} indices, but its "
                             f"len() is {len(self.sampler)}")
        if order.size and (order.min() < 0 or order.max() >= len(self.x)):
            raise IndexError(f"DataLoader: sampler index out of range for {len(self.x)} samples "
                             f"(min {order.min()}, max {order.max()})")
        return order

    def _batches(self, order):
        n, b = (len(self.x) if order is None else len(order)), self.batch_size
        # uint8 images are gathered and scaled in one compiled pass from a flat (N, D) view of the
        # data (kernels/data.py); only a non-contiguous array, which has no such view, copies its
        # batch's rows first.
        images = (self.x.reshape(len(self.x), -1)
                  if self._scale and self.x.flags.c_contiguous and len(self.x) else None)
        for start in range(0, len(self) * b, b):
            stop = min(start + b, n)
            rows = slice(start, stop) if order is None else order[start:stop]
            yield self._gather(rows, images), self.y[rows].copy()

    def _gather(self, rows, images):
        """This batch's rows (only those) as a fresh C-contiguous array of ``dtype``."""
        if not self._scale:
            xb = self.x[rows]
            out = xb.astype(self.dtype, order="C", copy=isinstance(rows, slice))
        else:
            if isinstance(rows, slice):
                rows = np.arange(rows.start, rows.stop)
            if images is None:
                images = np.ascontiguousarray(self.x[rows]).reshape(len(rows), -1)
                rows = np.arange(len(rows))
            out = np.empty((len(rows), images.shape[1]), dtype=self.dtype)
            backend.ops().gather_scaled(images, rows, out, 255)
        return out.reshape((len(out),) + self._sample_shape)

    def __repr__(self):
        sampler = "" if self.sampler is None else f", sampler={self.sampler!r}"
        return (f"DataLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, dtype={self.dtype.name}, "
                f"flatten={self.flatten}, batches={len(self)}{sampler})")
