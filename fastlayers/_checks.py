"""Argument checks shared by every layer, loss and optimizer.

Layers call these before any kernel runs: compiled kernels do no bounds or shape checks of their own,
so a wrong shape or an out-of-range label must stop here, with a message that names the argument and
what was expected, and before any state (parameters, gradients, running statistics) changes.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype, name="dtype"):
    """``dtype`` as a NumPy dtype, which must be float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}")
    return dt


def float_array(x, name="input", ndim=None, dtype=None, owner=None):
    """Check that ``x`` is a float32/float64 ndarray with ``ndim`` dimensions (an int or a tuple of
    allowed ints) and, if given, the ``dtype`` of the owner's parameters; return it C-contiguous."""
    where = f"{owner}: " if owner else ""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}{name} must have dtype float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{where}{name} has dtype {x.dtype} but the parameters are {np.dtype(dtype)}; "
                        f"cast the input with .astype() or the model with .to()")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{where}{name} must be {want}, got shape {x.shape}")
    # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def dim_size(x, axis, expected, name="input", what="features", owner=None):
    """Check that ``x.shape[axis] == expected``."""
    if x.shape[axis] != expected:
        where = f"{owner}: " if owner else ""
        raise ValueError(f"{where}expected {name} with {expected} {what} in dimension {axis}, "
                         f"got shape {x.shape}")


def same_shape(input, target, owner, name="target", reference="input"):
    """Check that ``target`` (called ``name``) has the shape of ``input`` (called ``reference``)."""
    if input.shape != target.shape:
        raise ValueError(f"{owner}: {name} shape {target.shape} must match {reference} shape "
                         f"{input.shape}")


def class_labels(target, shape, num_classes, owner, ignore_index=None):
    """Check integer class labels: ``shape`` (a tuple, or an int n for (n,)), an integer dtype,
    every value in [0, num_classes) or equal to ``ignore_index`` (None: no value is ignored).
    Returns them as a contiguous int64 array."""
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(shape)
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{owner}: target must be a numpy.ndarray of class indices, "
                        f"got {type(target).__name__}")
    if target.dtype.kind not in "iu":        # np.issubdtype(., np.integer), without its cost
        raise TypeError(f"{owner}: class-index target must have an integer dtype, got {target.dtype} "
                        f"(for class probabilities pass a float target shaped like the input)")
    if target.shape != shape:
        raise ValueError(f"{owner}: class-index target must have shape {shape}, got {target.shape}")
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        bad = (target < 0) | (target >= num_classes)
        if ignore_index is not None:
            bad &= target != ignore_index
        if bad.any():
            allowed = f"[0, {num_classes})" + ("" if ignore_index is None else
                                               f" or equal ignore_index={ignore_index}")
            raise ValueError(f"{owner}: target values must be in {allowed}, found "
                             f"{target[bad][0]}")
    return np.asarray(target, dtype=np.int64, order="C")      # (ascontiguousarray: 0-d -> 1-d)


def boolean(name, value):
    """``value`` if it is True or False (not 0, 1 or None)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def integer(name, value, minimum=0):
    """An int >= ``minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def real(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number in the interval given by ``low``/``high`` (closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value:g}")
    return value


def choice(name, value, options):
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def state_array(name, value, like):
    """``value`` (an array, a number, or a tensor with ``.numpy()``) checked to fit the array
    ``like`` it will be copied into: numeric, of ``like``'s shape, and integral when ``like`` is."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value) if isinstance(value, (np.ndarray, numbers.Number)) else None
    if arr is None or arr.dtype.kind not in "biuf":
        what = type(value).__name__ if arr is None else f"dtype {arr.dtype}"
        raise TypeError(f"{name} must be a numeric array, got {what}")
    if arr.shape != like.shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {like.shape}")
    if like.dtype.kind in "iu" and arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold integers (the buffer is {like.dtype}), got {arr.dtype}")
    if like.dtype.kind == "f" and arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold numbers, got booleans")
    return arr
