"""Linear, Identity and Flatten."""
import math

import numpy as np

from fastlayers import _checks, backend
from fastlayers.init import default_weight_and_bias
from fastlayers.module import Module, Parameter
from kernels.activations import IDENTITY, NO_PARAMS


class Linear(Module):
    """y = x W^T + b.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias (default True).
        dtype: float32 (default) or float64.

    Shape: input (*, in_features), output (*, out_features).
    Attributes: ``weight`` (out_features, in_features) and ``bias`` (out_features,), both initialised
    from U(-1/sqrt(in_features), 1/sqrt(in_features)) as in PyTorch.

    Example::

        >>> layer = fastlayers.Linear(784, 128)
        >>> layer(np.zeros((64, 784), np.float32)).shape
        (64, 128)

    Inside a :class:`Sequential`, a following elementwise activation (ReLU, GELU, SiLU, ...) runs
    in this layer's kernels (see :mod:`fastlayers.fused`).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features = _checks.integer("in_features", in_features, 1)
        self.out_features = _checks.integer("out_features", out_features, 1)
        _checks.boolean("bias", bias)
        w, b = default_weight_and_bias((out_features, in_features), in_features, bias,
                                       _checks.float_dtype(dtype))
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None
        self._cache = None

    def affine(self, x, act=IDENTITY, params=NO_PARAMS):
        """x W^T + b with the activation ``act`` (a code of ``kernels.activations``, with its
        ``params``) applied in the same pass after the GEMM. Returns the output and what
        :meth:`affine_backward` needs."""
        x = _checks.float_array(x, "input", dtype=self.weight.dtype, owner="Linear")
        if x.ndim == 0:
            raise ValueError("Linear: input must have at least 1 dimension, got a scalar")
        _checks.dim_size(x, -1, self.in_features, owner="Linear")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)          # (*, in) as the GEMM's (N, in)
        b = self.bias.data if self.bias is not None else None
        y, saved = backend.ops().linear_forward(x2, self.weight.data, b, act, params)
        return y.reshape(lead + (self.out_features,)), (x2, saved, act, params, lead)

    def affine_backward(self, saved, grad_output):
        """The input gradient (None unless ``needs_input_grad``) of an :meth:`affine` call that
        returned ``saved``; adds the weight and bias gradients."""
        x2, s, act, params, lead = saved
        g = _checks.float_array(grad_output, "grad_output", dtype=s.dtype, owner="Linear")
        if g.shape != lead + (self.out_features,):
            raise ValueError(f"Linear: grad_output must have shape {lead + (self.out_features,)}, "
                             f"got {g.shape}")
        db = self.bias.grad_buffer() if self.bias is not None else None
        dx = backend.ops().linear_backward(g.reshape(s.shape), x2, self.weight.data, s, act,
                                           params, self.weight.grad_buffer(), db,
                                           self.needs_input_grad)
        return None if dx is None else dx.reshape(lead + (self.in_features,))

    def forward(self, x):
        y, self._cache = self.affine(x)
        return y

    def backward(self, grad_output):
        return self.affine_backward(self._saved(), grad_output)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Returns its input unchanged (a placeholder, as ``torch.nn.Identity``)."""

    def forward(self, x):
        self._cache = True
        return x

    def backward(self, grad_output):
        self._saved()
        return grad_output


class Flatten(Module):
    """Flattens dimensions ``start_dim`` .. ``end_dim`` into one, (N, C, H, W) -> (N, C*H*W) by
    default (as ``torch.nn.Flatten``)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = _checks.integer("start_dim", start_dim, minimum=-(1 << 31))
        self.end_dim = _checks.integer("end_dim", end_dim, minimum=-(1 << 31))

    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"Flatten: input must be a numpy.ndarray, got {type(x).__name__}")
        nd = max(x.ndim, 1)
        s, e = self.start_dim % nd, self.end_dim % nd
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd) or s > e:
            raise ValueError(f"Flatten: start_dim={self.start_dim}, end_dim={self.end_dim} are not a "
                             f"valid range for a {x.ndim}-D input")
        self._cache = x.shape
        return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])

    def backward(self, grad_output):
        shape = self._saved()
        if not isinstance(grad_output, np.ndarray):
            raise TypeError(f"Flatten: grad_output must be a numpy.ndarray, got "
                            f"{type(grad_output).__name__}")
        s, e = self.start_dim % len(shape), self.end_dim % len(shape)
        out_shape = shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:]
        if grad_output.shape != out_shape:
            raise ValueError(f"Flatten: grad_output must have the output's shape {out_shape}, got "
                             f"{grad_output.shape}")
        return grad_output.reshape(shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
