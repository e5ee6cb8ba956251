"""Conv2d (PyTorch's layer: cross-correlation over (N, C, H, W)) and the notebooks' SimpleConv."""
import numbers

import numpy as np

from fastlayers import _checks, backend
from fastlayers.init import default_weight_and_bias
from fastlayers.module import Module, Parameter
from kernels.conv import out_size


def pair(name, value, minimum):
    """An int or a pair of ints, each >= ``minimum``, as a tuple (h, w)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum} (in each dimension), got {value!r}")
    return int(items[0]), int(items[1])


def image_batch(x, channels, dtype, owner):
    """Check a (N, C, H, W) float input with ``channels`` channels and ``dtype``; C-contiguous."""
    x = _checks.float_array(x, "input", ndim=4, dtype=dtype, owner=owner)
    if x.shape[1] != channels:
        raise ValueError(f"{owner}: expected input with {channels} channels (dimension 1 of "
                         f"(N, C, H, W)), got shape {x.shape}")
    return x


class Conv2d(Module):
    """2-D convolution (cross-correlation, as ``torch.nn.Conv2d``) with zero padding.

    Args:
        in_channels: channels C of the input.
        out_channels: channels O of the output.
        kernel_size: int or (kh, kw).
        stride: int or pair, >= 1 (default 1).
        padding: int or pair, >= 0, zeros added on both sides (default 0).
        dilation: int or pair, >= 1, spacing between kernel taps (default 1).
        bias: learn an additive per-channel bias (default True).
        dtype: float32 (default) or float64.

    Shape: input (N, C, H, W), output (N, O, OH, OW) with
    ``OH = (H + 2 padding - dilation (kh - 1) - 1) // stride + 1`` (OW likewise).
    Attributes: ``weight`` (O, C, kh, kw) and ``bias`` (O,), initialised as PyTorch does, from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C * kh * kw.

    Example::

        >>> conv = fastlayers.Conv2d(1, 16, 3, padding=1)
        >>> conv(np.zeros((8, 1, 28, 28), np.float32)).shape
        (8, 16, 28, 28)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, dtype=np.float32):
        super().__init__()
        self.in_channels = _checks.integer("in_channels", in_channels, 1)
        self.out_channels = _checks.integer("out_channels", out_channels, 1)
        self.kernel_size = pair("kernel_size", kernel_size, 1)
        self.stride = pair("stride", stride, 1)
        self.padding = pair("padding", padding, 0)
        self.dilation = pair("dilation", dilation, 1)
        _checks.boolean("bias", bias)
        kh, kw = self.kernel_size
        w, b = default_weight_and_bias((self.out_channels, self.in_channels, kh, kw),
                                       self.in_channels * kh * kw, bias, _checks.float_dtype(dtype))
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None
        self._cache = None

    def output_shape(self, input_shape):
        """(N, O, OH, OW) for an input of shape (N, C, H, W); ValueError if the (dilated) kernel
        does not fit in the padded input."""
        n, _, h, w = input_shape
        size = []
        for axis, (length, k, s, p, d) in enumerate(zip((h, w), self.kernel_size, self.stride,
                                                          self.padding, self.dilation)):
            if length + 2 * p < d * (k - 1) + 1:
                raise ValueError(f"Conv2d: the kernel ({d * (k - 1) + 1} wide with dilation {d}) "
                                 f"is larger than the padded input ({length} + 2*{p}) in dimension "
                                 f"{axis + 2} of input shape {tuple(input_shape)}")
            size.append(out_size(length, k, s, p, d))
        return (n, self.out_channels, size[0], size[1])

    def check_input(self, x):
        """``x`` checked (dtype, (N, C, H, W) with this layer's C, the kernel fits) and C-contiguous,
        with the output's shape."""
        x = image_batch(x, self.in_channels, self.weight.dtype, "Conv2d")
        return x, self.output_shape(x.shape)

    def forward(self, x):
        x, _ = self.check_input(x)
        b = self.bias.data if self.bias is not None else None
        y = backend.ops().conv2d_forward(x, self.weight.data, b, self.stride, self.padding,
                                         self.dilation)
        self._cache = x
        return y

    def backward(self, grad_output):
        x = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=x.dtype, owner="Conv2d")
        expected = self.output_shape(x.shape)
        if g.shape != expected:
            raise ValueError(f"Conv2d: grad_output must have shape {expected}, got {g.shape}")
        ops = backend.ops()
        db = self.bias.grad_buffer() if self.bias is not None else None
        ops.conv2d_backward_weight(g, x, self.stride, self.padding, self.dilation,
                                   self.weight.grad_buffer(), db)
        dx = None
        if self.needs_input_grad:
            dx = ops.conv2d_backward_input(g, self.weight.data, x.shape, self.stride, self.padding,
                                           self.dilation)
        return dx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + ("" if self.bias is not None else ", bias=False")


class SimpleConv(Module):
    """The seed notebooks' SimpleConv: one 2-D kernel and a scalar bias, valid convolution
    (cross-correlation, stride 1, no padding), a thin wrapper over :class:`Conv2d`.

    Args:
        kernel_size: int or (kh, kw).
        dtype: float32 (default) or float64.

    Shape: input (H, W), one image, -> (H - kh + 1, W - kw + 1); or (N, H, W), a batch of
    single-channel images, -> (N, H - kh + 1, W - kw + 1). (A 3-D input is read as a batch, never
    as channels: the layer has one kernel and one input channel.)
    Attributes: ``kernel`` (kh, kw), a view of the wrapped ``conv.weight``, and ``bias``, the (1,)
    parameter ``conv.bias``. Initialised as Conv2d(1, 1, kernel_size).
    """

    def __init__(self, kernel_size, dtype=np.float32):
        super().__init__()
        self.conv = Conv2d(1, 1, kernel_size, dtype=dtype)

    @property
    def kernel(self):
        return self.conv.weight.data[0, 0]

    @property
    def bias(self):
        return self.conv.bias

    def forward(self, x):
        x = _checks.float_array(x, "input", ndim=(2, 3), dtype=self.conv.weight.dtype,
                                owner="SimpleConv")
        y = self.conv.forward(x.reshape((-1, 1) + x.shape[-2:]))
        self._cache = x.ndim
        return y.reshape(y.shape[2:]) if x.ndim == 2 else y[:, 0]

    def backward(self, grad_output):
        ndim = self._saved()
        g = np.asarray(grad_output)
        if g.ndim != ndim:
            raise ValueError(f"SimpleConv: grad_output must be {ndim}-D like the output, "
                             f"got shape {g.shape}")
        self.conv.needs_input_grad = self.needs_input_grad
        dx = self.conv.backward(g.reshape((-1, 1) + g.shape[-2:]))
        if dx is not None:
            dx = dx.reshape(dx.shape[2:]) if ndim == 2 else dx[:, 0]
        return dx

    def extra_repr(self):
        return f"kernel_size={self.conv.kernel_size}"
