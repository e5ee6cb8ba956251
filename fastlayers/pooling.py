"""MaxPool2d and AvgPool2d (PyTorch's layers, floor mode, no dilation), AdaptiveAvgPool2d and
AdaptiveMaxPool2d."""
import numbers

from fastlayers import _checks, backend
from fastlayers.conv import pair
from fastlayers.module import Module
from kernels.pool import out_size


class _Pool2d(Module):
    _name = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else pair("stride", stride, 1)
        self.padding = pair("padding", padding, 0)
        for k, p in zip(self.kernel_size, self.padding):
            if 2 * p > k:
                raise ValueError(f"padding must be at most half the kernel size, got "
                                 f"padding={self.padding} for kernel_size={self.kernel_size}")
        self._cache = None

    def _check_input(self, x):
        x = _checks.float_array(x, "input", ndim=4, owner=self._name)
        self.check_shape(x.shape)
        return x

    def check_shape(self, shape):
        """ValueError if the window does not fit in the padded (N, C, H, W) input ``shape``."""
        for axis, (length, k, p) in enumerate(zip(shape[2:], self.kernel_size, self.padding)):
            if length + 2 * p < k:
                raise ValueError(f"{self._name}: kernel_size {k} is larger than the padded input "
                                 f"({length} + 2*{p}) in dimension {axis + 2} of input shape "
                                 f"{tuple(shape)}")

    def _output_shape(self, x_shape):
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (n, c, out_size(h, kh, sh, ph), out_size(w, kw, sw, pw))

    def _check_grad(self, grad_output, dtype, x_shape):
        g = _checks.float_array(grad_output, "grad_output", dtype=dtype, owner=self._name)
        expected = self._output_shape(x_shape)
        if g.shape != expected:
            raise ValueError(f"{self._name}: grad_output must have shape {expected}, got {g.shape}")
        return g

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Maximum over each kh x kw window (as ``torch.nn.MaxPool2d``; the input is padded with -inf).

    Args:
        kernel_size: int or (kh, kw).
        stride: int or pair (default: kernel_size).
        padding: int or pair, at most half the kernel size (default 0).

    Shape: input (N, C, H, W), output (N, C, OH, OW) with OH = (H + 2 padding - kh) // stride + 1.
    The backward pass sends each output's gradient to the input that was the window's maximum (the
    first one in scan order on ties); overlapping windows add up.

    Example::

        >>> fastlayers.MaxPool2d(2)(np.zeros((8, 16, 28, 28), np.float32)).shape
        (8, 16, 14, 14)
    """
    _name = "MaxPool2d"

    def forward(self, x):
        x = self._check_input(x)
        y, idx = backend.ops().maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._cache = (idx, x.shape, x.dtype)
        return y

    def backward(self, grad_output):
        idx, x_shape, dtype = self._saved()
        g = self._check_grad(grad_output, dtype, x_shape)
        return backend.ops().maxpool2d_backward(g, idx, x_shape)


class AvgPool2d(_Pool2d):
    """Mean over each kh x kw window (as ``torch.nn.AvgPool2d`` with its default
    ``count_include_pad=True``: zero padding counts, every window divides by kh * kw).

    Args:
        kernel_size: int or (kh, kw).
        stride: int or pair (default: kernel_size).
        padding: int or pair, at most half the kernel size (default 0).

    Shape: input (N, C, H, W), output (N, C, OH, OW) with OH = (H + 2 padding - kh) // stride + 1.
    """
    _name = "AvgPool2d"

    def forward(self, x):
        x = self._check_input(x)
        self._cache = (x.shape, x.dtype)
        return backend.ops().avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)

    def backward(self, grad_output):
        x_shape, dtype = self._saved()
        g = self._check_grad(grad_output, dtype, x_shape)
        return backend.ops().avgpool2d_backward(g, x_shape, self.kernel_size,
                                                self.stride, self.padding)


def adaptive_output_size(output_size):
    """AdaptiveAvgPool2d's / AdaptiveMaxPool2d's ``output_size`` checked: an int >= 1, or a pair
    whose entries are ints >= 1 or None (keep the input's size). Kept as given (a list as a
    tuple)."""
    items = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,)
    if isinstance(output_size, (tuple, list)) and len(items) != 2:
        raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
    for v in items:
        if v is None and len(items) == 2:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"output_size must be an int or a pair of ints or None, got "
                            f"{output_size!r}")
        if v < 1:
            raise ValueError(f"output_size must be >= 1 (in each dimension), got {output_size!r}")
    return items if len(items) == 2 else int(output_size)


class _AdaptivePool2d(Module):
    _name = None

    def __init__(self, output_size):
        super().__init__()
        self.output_size = adaptive_output_size(output_size)
        self._cache = None

    def _resolved(self, h, w):
        """(OH, OW) for an (H, W) input: None keeps the input's size."""
        size = self.output_size
        oh, ow = size if isinstance(size, tuple) else (size, size)
        return (h if oh is None else int(oh)), (w if ow is None else int(ow))

    def _check_input(self, x):
        """The input checked ((N, C, H, W) or an unbatched (C, H, W), H, W >= 1) and C-contiguous
        as (N, C, H, W), whether it was unbatched, and the output size (OH, OW)."""
        x = _checks.float_array(x, "input", ndim=(3, 4), owner=self._name)
        if 0 in x.shape[-2:]:
            raise ValueError(f"{self._name}: input must have non-zero height and width, got shape "
                             f"{x.shape}")
        unbatched = x.ndim == 3
        return (x[None] if unbatched else x), unbatched, self._resolved(*x.shape[-2:])

    def _check_grad(self, grad_output, dtype, shape, unbatched):
        g = _checks.float_array(grad_output, "grad_output", dtype=dtype, owner=self._name)
        expected = shape[1:] if unbatched else shape
        if g.shape != expected:
            raise ValueError(f"{self._name}: grad_output must have shape {expected}, got {g.shape}")
        return g[None] if unbatched else g

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Mean over each of OH x OW bins of the input (as ``torch.nn.AdaptiveAvgPool2d``): output row
    i averages input rows floor(i H / OH) to ceil((i + 1) H / OH) - 1, columns likewise (bins
    overlap when OH does not divide H).

    Args:
        output_size: int (OH = OW) or a pair (OH, OW), each >= 1 or None (keep the input's size).

    Shape: input (N, C, H, W) or (C, H, W), output (N, C, OH, OW) or (C, OH, OW).
    ``AdaptiveAvgPool2d(1)`` is the global average pool.

    Example::

        >>> fastlayers.AdaptiveAvgPool2d((1, 1))(np.zeros((8, 64, 7, 7), np.float32)).shape
        (8, 64, 1, 1)
    """
    _name = "AdaptiveAvgPool2d"

    def forward(self, x):
        x, unbatched, size = self._check_input(x)
        y = backend.ops().adaptive_avgpool2d_forward(x, size)
        self._cache = (x.shape, x.dtype, unbatched)
        return y[0] if unbatched else y

    def backward(self, grad_output):
        x_shape, dtype, unbatched = self._saved()
        g = self._check_grad(grad_output, dtype, x_shape[:2] + self._resolved(*x_shape[2:]),
                             unbatched)
        dx = backend.ops().adaptive_avgpool2d_backward(g, x_shape)
        return dx[0] if unbatched else dx


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Maximum over each of OH x OW bins of the input (as ``torch.nn.AdaptiveMaxPool2d``; bins as
    :class:`AdaptiveAvgPool2d`'s). Ties keep the first maximum in scan order; a NaN wins (the last
    one if several), as in PyTorch.

    Args:
        output_size: int (OH = OW) or a pair (OH, OW), each >= 1 or None (keep the input's size).
        return_indices: also return, for each output, the flat index (row * W + column) of its
            maximum in the input plane (default False).

    Shape: input (N, C, H, W) or (C, H, W), output (N, C, OH, OW) or (C, OH, OW) (and indices of
    the same shape, int64). The backward pass sends each output's gradient to its maximum; bins
    that overlap add up.
    """
    _name = "AdaptiveMaxPool2d"

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = _checks.boolean("return_indices", return_indices)

    def forward(self, x):
        x, unbatched, size = self._check_input(x)
        y, idx = backend.ops().adaptive_maxpool2d_forward(x, size)
        self._cache = (idx, x.shape, x.dtype, unbatched)
        if unbatched:
            y, idx = y[0], idx[0]
        return (y, idx) if self.return_indices else y

    def backward(self, grad_output):
        idx, x_shape, dtype, unbatched = self._saved()
        g = self._check_grad(grad_output, dtype, idx.shape, unbatched)
        dx = backend.ops().adaptive_maxpool2d_backward(g, idx, x_shape)
        return dx[0] if unbatched else dx
