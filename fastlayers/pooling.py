"""MaxPool2d and AvgPool2d (PyTorch's layers, floor mode, no dilation)."""
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
