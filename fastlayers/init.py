"""Weight initialisation with PyTorch's ``torch.nn.init`` names, arguments and fan/gain rules.

Every function fills its argument in place and returns it. The argument is a :class:`Parameter`
(its ``data`` is filled) or a float32/float64 NumPy array. Draws come from the generator that
:func:`fastlayers.manual_seed` seeds, or from ``generator`` (a ``numpy.random.Generator``) when one
is given, so a seed fixes every initial weight. The values are not PyTorch's own draws (the two
libraries have different generators); their distributions are the same.

Fans, as in PyTorch: for a weight of shape (out, in, *kernel), ``fan_in = in * prod(kernel)`` and
``fan_out = out * prod(kernel)``; a Linear weight (out_features, in_features) has
``fan_in = in_features``.
"""
import math
import numbers
import warnings

import numpy as np

from fastlayers import random

__all__ = ["calculate_gain", "constant_", "eye_", "kaiming_normal_", "kaiming_uniform_",
           "normal_", "ones_", "orthogonal_", "trunc_normal_", "uniform_", "xavier_normal_",
           "xavier_uniform_", "zeros_"]

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for ``nonlinearity``: 1 for linear, convolutions and sigmoid, 5/3 for
    tanh, sqrt(2) for relu, sqrt(2 / (1 + slope^2)) for leaky_relu (``param`` is the slope,
    default 0.01), 3/4 for selu."""
    if nonlinearity in _LINEAR:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; expected one of "
                     f"{list(_LINEAR) + ['tanh', 'relu', 'leaky_relu', 'selu']}")


# ------------------------------------------------------------------------------------ helpers

def _target(tensor, fn):
    """The float array that ``fn`` fills in place: a Parameter's data, or the array itself."""
    from fastlayers.module import Parameter
    arr = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"init.{fn}: tensor must be a fastlayers Parameter or a numpy.ndarray, got "
                        f"{type(tensor).__name__}")
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"init.{fn}: tensor must be float32 or float64, got {arr.dtype}")
    if not arr.flags.writeable:
        raise ValueError(f"init.{fn}: tensor is read-only")
    return arr


def _rng(generator, fn):
    if generator is None:
        return random.generator()
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"init.{fn}: generator must be a numpy.random.Generator or None, got "
                        f"{type(generator).__name__}")
    return generator


def _real(fn, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"init.{fn}: {name} must be a finite real number, got {value!r}")
    return float(value)


def _fill(tensor, fn, draw):
    """Fill ``tensor``'s array with ``draw(shape)`` (a float64 array), cast to its dtype."""
    arr = _target(tensor, fn)
    arr[...] = draw(arr.shape)
    return tensor


def _fans(arr, fn):
    if arr.ndim < 2:
        raise ValueError(f"init.{fn}: fan in and fan out can not be computed for a tensor with "
                         f"fewer than 2 dimensions (got shape {arr.shape})")
    receptive = math.prod(arr.shape[2:])
    return arr.shape[1] * receptive, arr.shape[0] * receptive


def _fan(arr, mode, fn):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init.{fn}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(arr, fn)
    return fan_in if mode == "fan_in" else fan_out


# ------------------------------------------------------------------------------------ plain fills

def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with draws from U(a, b)."""
    a, b = _real("uniform_", "a", a), _real("uniform_", "b", b)
    if a > b:
        raise ValueError(f"init.uniform_: a must be at most b, got a={a}, b={b}")
    rng = _rng(generator, "uniform_")
    return _fill(tensor, "uniform_", lambda shape: rng.uniform(a, b, size=shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with draws from N(mean, std^2)."""
    mean, std = _real("normal_", "mean", mean), _real("normal_", "std", std)
    if std < 0:
        raise ValueError(f"init.normal_: std must be non-negative, got {std}")
    rng = _rng(generator, "normal_")
    return _fill(tensor, "normal_", lambda shape: rng.normal(mean, std, size=shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fill with draws from N(mean, std^2) truncated to [a, b]. The sampler is exact however far
    [a, b] lies in the tails (PyTorch warns that its own may not be when the mean is more than
    2 std outside [a, b])."""
    mean, std = _real("trunc_normal_", "mean", mean), _real("trunc_normal_", "std", std)
    a, b = _real("trunc_normal_", "a", a), _real("trunc_normal_", "b", b)
    if std <= 0:
        raise ValueError(f"init.trunc_normal_: std must be positive, got {std}")
    if a >= b:
        raise ValueError(f"init.trunc_normal_: a must be less than b, got a={a}, b={b}")
    rng = _rng(generator, "trunc_normal_")
    from scipy.stats import truncnorm     # lazily: scipy.stats takes a while to import

    def draw(shape):
        z = truncnorm.rvs((a - mean) / std, (b - mean) / std, size=shape, random_state=rng)
        return np.clip(mean + std * z, a, b)
    return _fill(tensor, "trunc_normal_", draw)


def constant_(tensor, val):
    """Fill with ``val`` (any real number, inf and NaN included)."""
    if isinstance(val, bool) or not isinstance(val, numbers.Real):
        raise ValueError(f"init.constant_: val must be a real number, got {val!r}")
    return _fill(tensor, "constant_", lambda shape: val)


def zeros_(tensor):
    """Fill with 0."""
    return _fill(tensor, "zeros_", lambda shape: 0.0)


def ones_(tensor):
    """Fill with 1."""
    return _fill(tensor, "ones_", lambda shape: 1.0)


def eye_(tensor):
    """Fill a 2-D tensor with the identity matrix (ones on the diagonal, as many as fit)."""
    arr = _target(tensor, "eye_")
    if arr.ndim != 2:
        raise ValueError(f"init.eye_: only 2-D tensors are supported, got shape {arr.shape}")
    return _fill(tensor, "eye_", lambda shape: np.eye(*shape))


# ------------------------------------------------------------------------------------ fan-scaled

def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    gain = _real("xavier_uniform_", "gain", gain)
    fan_in, fan_out = _fans(_target(tensor, "xavier_uniform_"), "xavier_uniform_")
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    gain = _real("xavier_normal_", "gain", gain)
    fan_in, fan_out = _fans(_target(tensor, "xavier_normal_"), "xavier_normal_")
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(tensor, a, mode, nonlinearity, fn):
    arr = _target(tensor, fn)
    if 0 in arr.shape:
        warnings.warn(f"init.{fn}: initialising a zero-element tensor is a no-op", stacklevel=3)
        return None
    fan = _fan(arr, mode, fn)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He: U(-b, b) with b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a) and fan
    the ``mode`` ('fan_in' or 'fan_out'). Linear's and Conv2d's default is a = sqrt(5)."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    if std is None:
        return tensor
    return uniform_(tensor, -math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He: N(0, std^2) with std = gain / sqrt(fan) (see :func:`kaiming_uniform_`)."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_")
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix times ``gain``, the tensor viewed as (shape[0], rest): the Q of a
    QR factorisation of a Gaussian matrix, with signs fixed so that Q is uniformly distributed."""
    gain = _real("orthogonal_", "gain", gain)
    arr = _target(tensor, "orthogonal_")
    if arr.ndim < 2:
        raise ValueError(f"init.orthogonal_: only tensors with 2 or more dimensions are supported, "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        return tensor
    rows = arr.shape[0]
    cols = arr.size // rows
    rng = _rng(generator, "orthogonal_")

    def draw(shape):
        flat = rng.standard_normal((rows, cols))
        if rows < cols:
            flat = flat.T
        q, r = np.linalg.qr(flat)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (gain * q).reshape(shape)
    return _fill(tensor, "orthogonal_", draw)


# ------------------------------------------------------------------------------------ layer defaults

def _uniform_array(shape, bound, dtype):
    """An array of ``shape`` drawn from U(-bound, bound), in ``dtype``."""
    return random.generator().uniform(-bound, bound, size=shape).astype(dtype)


def default_weight_and_bias(weight_shape, fan_in, bias, dtype):
    """PyTorch's default for Linear and Conv2d: kaiming_uniform(a=sqrt(5)) for the weight, which is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias (None if not ``bias``)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    w = _uniform_array(weight_shape, bound, dtype)
    b = _uniform_array((weight_shape[0],), bound, dtype) if bias else None
    return w, b
