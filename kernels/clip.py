"""Gradient clipping over all of a model's gradients in one compiled call.

    grads: a tuple of 1-D arrays of one dtype (each parameter's gradient, flattened); the kernels
    loop over the tuple inside the compiled code, so one call covers every parameter.

grad_norm:  ||g||_p over all elements of all arrays, in float64: (sum |g|^p)^(1/p) for finite
            p > 0, max |g| for p = inf; NaN if any element is NaN.
scale:      g *= c in every array (c cast to the gradients' dtype).
clip_value: g = clamp(g, -v, v) in every array (NaN stays NaN, as torch.clamp).

Serial kernels: the work is one memory pass (tens to hundreds of microseconds at the speed-run
models' sizes) and a tuple cannot be split across prange threads. A tuple of n arrays compiles once
per n (and dtype), cached on disk.
"""
import math

import numpy as np
from numba import njit

from kernels._registry import OPTIONS, register


# ----------------------------------------------------------------------------------------- NumPy twins

def grad_norm_np(grads, norm_type):
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        return float(max(np.max(np.abs(g.astype(np.float64)), initial=0.0) for g in grads))
    total = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads)
    return total ** (1.0 / norm_type)


def scale_np(grads, c):
    for g in grads:
        g *= g.dtype.type(c)


def clip_value_np(grads, v):
    for g in grads:
        np.clip(g, g.dtype.type(-v), g.dtype.type(v), out=g)


# ---------------------------------------------------------------------------------------- Numba kernels

@njit(fastmath={"reassoc"}, **OPTIONS)
def grad_norm(grads, norm_type):
    # reassoc: the float64 sums vectorise into several running sums (the order is fixed by the
    # compiled code, so the result does not change from call to call)
    if math.isinf(norm_type):
        m = 0.0
        nan = False
        for g in grads:
            for i in range(g.size):
                a = abs(np.float64(g[i]))
                nan |= a != a
                m = max(m, a)
        return np.nan if nan else m
    total = 0.0
    for g in grads:
        s = 0.0
        if norm_type == 2.0:
            for i in range(g.size):
                v = np.float64(g[i])
                s += v * v
        elif norm_type == 1.0:
            for i in range(g.size):
                s += abs(np.float64(g[i]))
        else:
            for i in range(g.size):
                s += abs(np.float64(g[i])) ** norm_type
        total += s
    return total ** (1.0 / norm_type)


# The in-place loops run in a function of one array: written in the loop over the tuple's arrays,
# they did not vectorise (clip_value measured 7x slower, scale 4.6x, at the mlp-bn's gradients).
@njit(**OPTIONS)
def _scale_array(g, c):
    for i in range(g.size):
        g[i] *= c


@njit(**OPTIONS)
def _clip_array(g, lo, hi):
    for i in range(g.size):
        x = g[i]
        g[i] = hi if x > hi else (lo if x < lo else x)


@njit(**OPTIONS)
def scale(grads, c):
    for g in grads:
        _scale_array(g, g.dtype.type(c))


@njit(**OPTIONS)
def clip_value(grads, v):
    for g in grads:
        hi = g.dtype.type(v)
        _clip_array(g, -hi, hi)


register("grad_norm", grad_norm, grad_norm_np)
register("scale", scale, scale_np)
register("clip_value", clip_value, clip_value_np)
