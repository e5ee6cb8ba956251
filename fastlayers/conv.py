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


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def conv_padding(padding, kernel_size, stride, dilation):
    """Conv2d's ``padding`` checked, as it is kept (an (h, w) pair, or the string ``'same'`` or
    ``'valid'``), and the zeros it adds as (top, bottom, left, right). ``'same'`` pads
    dilation (k - 1) in total, half of it (rounded down) before and the rest after, as PyTorch;
    it needs stride 1."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', "
                             f"got {padding!r}")
        if padding == "valid":
            return padding, (0, 0, 0, 0)
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1 (PyTorch does not support it for "
                             f"strided convolutions), got stride={stride}")
        sides = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            sides += [total // 2, total - total // 2]
        return padding, tuple(sides)
    ph, pw = pair("padding", padding, 0)
    return (ph, pw), (ph, ph, pw, pw)


class Conv2d(Module):
    """2-D convolution (cross-correlation, as ``torch.nn.Conv2d``) with zero padding.

    Args:
        in_channels: channels C of the input.
        out_channels: channels O of the output.
        kernel_size: int or (kh, kw).
        stride: int or pair, >= 1 (default 1).
        padding: int or pair, >= 0, zeros added on both sides (default 0); or ``'valid'`` (no
            padding) or ``'same'`` (the output has the input's size; stride 1 only; an odd total
            ``dilation * (k - 1)`` puts the extra zero at the bottom/right, as PyTorch).
        dilation: int or pair, >= 1, spacing between kernel taps (default 1).
        groups: int >= 1 dividing both C and O (default 1): the channels are split into
            ``groups`` groups, output channel o reading only the C / groups input channels of
            its group; ``groups == in_channels`` is a depthwise convolution (O a multiple of C).
        bias: learn an additive per-channel bias (default True).
        padding_mode: ``'zeros'`` (the default, and the only mode implemented; PyTorch's
            ``'reflect'``, ``'replicate'`` and ``'circular'`` raise NotImplementedError).
        dtype: float32 (default) or float64.

    Shape: input (N, C, H, W) or (C, H, W) (one unbatched image), output (N, O, OH, OW) or
    (O, OH, OW) with ``OH = (H + top + bottom - dilation (kh - 1) - 1) // stride + 1`` (OW
    likewise; top = bottom = padding for a numeric padding).
    Attributes: ``weight`` (O, C / groups, kh, kw) and ``bias`` (O,), initialised as PyTorch does,
    from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C / groups * kh * kw.

    Example::

        >>> conv = fastlayers.Conv2d(1, 16, 3, padding=1)
        >>> conv(np.zeros((8, 1, 28, 28), np.float32)).shape
        (8, 16, 28, 28)
        >>> fastlayers.Conv2d(32, 32, 3, padding="same", groups=32).weight.shape   # depthwise
        (32, 1, 3, 3)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=np.float32):
        super().__init__()
        self.in_channels = _checks.integer("in_channels", in_channels, 1)
        self.out_channels = _checks.integer("out_channels", out_channels, 1)
        self.kernel_size = pair("kernel_size", kernel_size, 1)
        self.stride = pair("stride", stride, 1)
        self.dilation = pair("dilation", dilation, 1)
        self.padding, self._sides = conv_padding(padding, self.kernel_size, self.stride,
                                                 self.dilation)
        self.groups = _checks.integer("groups", groups, 1)
        for name, channels in (("in_channels", self.in_channels),
                               ("out_channels", self.out_channels)):
            if channels % self.groups:
                raise ValueError(f"{name} ({channels}) must be divisible by groups "
                                 f"({self.groups})")
        _checks.boolean("bias", bias)
        _checks.choice("padding_mode", padding_mode, PADDING_MODES)
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d: padding_mode={padding_mode!r} is not implemented "
                                      f"(only 'zeros')")
        self.padding_mode = padding_mode
        kh, kw = self.kernel_size
        cg = self.in_channels // self.groups
        w, b = default_weight_and_bias((self.out_channels, cg, kh, kw), cg * kh * kw, bias,
                                       _checks.float_dtype(dtype))
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None
        self._cache = None

    def output_shape(self, input_shape):
        """(N, O, OH, OW) for an input of shape (N, C, H, W); ValueError if the (dilated) kernel
        does not fit in the padded input."""
        n, _, h, w = input_shape
        size = []
        for axis, (length, k, s, lo, hi, d) in enumerate(zip(
                (h, w), self.kernel_size, self.stride, self._sides[::2], self._sides[1::2],
                self.dilation)):
            if length + lo + hi < d * (k - 1) + 1:
                raise ValueError(f"Conv2d: the kernel ({d * (k - 1) + 1} wide with dilation {d}) "
                                 f"is larger than the padded input ({length} + {lo} + {hi}) in "
                                 f"dimension {axis + 2} of input shape {tuple(input_shape)}")
            size.append(out_size(length + lo + hi, k, s, 0, d))
        return (n, self.out_channels, size[0], size[1])

    def check_input(self, x):
        """``x`` checked (dtype, (N, C, H, W) with this layer's C, the kernel fits) and C-contiguous,
        with the output's shape."""
        x = image_batch(x, self.in_channels, self.weight.dtype, "Conv2d")
        return x, self.output_shape(x.shape)

    def forward(self, x):
        x = _checks.float_array(x, "input", ndim=(3, 4), dtype=self.weight.dtype, owner="Conv2d")
        unbatched = x.ndim == 3
        if unbatched and x.shape[0] != self.in_channels:
            raise ValueError(f"Conv2d: expected input with {self.in_channels} channels (dimension "
                             f"0 of an unbatched (C, H, W) input), got shape {x.shape}")
        x, _ = self.check_input(x[None] if unbatched else x)
        b = self.bias.data if self.bias is not None else None
        y = backend.ops().conv2d_forward(x, self.weight.data, b, self.stride, self._sides,
                                         self.dilation, self.groups)
        self._cache = (x, unbatched)
        return y[0] if unbatched else y

    def backward(self, grad_output):
        x, unbatched = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=x.dtype, owner="Conv2d")
        expected = self.output_shape(x.shape)
        if g.shape != (expected[1:] if unbatched else expected):
            raise ValueError(f"Conv2d: grad_output must have shape "
                             f"{expected[1:] if unbatched else expected}, got {g.shape}")
        if unbatched:
            g = g[None]
        ops = backend.ops()
        db = self.bias.grad_buffer() if self.bias is not None else None
        ops.conv2d_backward_weight(g, x, self.stride, self._sides, self.dilation,
                                   self.weight.grad_buffer(), db, self.groups)
        dx = None
        if self.needs_input_grad:
            dx = ops.conv2d_backward_input(g, self.weight.data, x.shape, self.stride, self._sides,
                                           self.dilation, self.groups)
            if unbatched:
                dx = dx[0]
        return dx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
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
