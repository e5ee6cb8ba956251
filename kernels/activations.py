"""Elementwise activations, and the bias+activation passes fused around a GEMM.

An activation is named by an integer code so one kernel serves all of them (the branch is taken once,
outside the loop). Every backward works from the activation's *output* y, so a layer caches y only:

    IDENTITY    y = x                              dy/dx = 1
    RELU        y = max(x, 0)                      dy/dx = 0 if y <= 0 else 1
    LEAKY_RELU  y = x if x > 0 else slope * x      dy/dx = 1 if y > 0 else slope   (needs slope > 0)
    SIGMOID     y = 1 / (1 + exp(-x)), computed from exp(-|x|) so it never overflows; dy/dx = y (1 - y)
    TANH        y = tanh(x)                        dy/dx = 1 - y^2

ReLU and LeakyReLU follow PyTorch at NaN and -inf too (NaN passes through both; relu(-inf) = 0; a
NaN output passes the gradient under ReLU and scales it by slope under LeakyReLU): _vmath.leaky.

The compiled sigmoid and tanh use kernels/_vmath.py's exp and tanh (arithmetic only, so their loops
vectorise; Numba's np.exp/np.tanh are scalar calls into libm).

Shapes: activation_forward/backward take x, y, grad of any shape (run on flat views);
bias_act_forward and act_bias_backward take y, grad (N, D) and b (D,).
"""
import numpy as np
from numba import prange

from kernels import _vmath
from kernels._registry import compiled, register

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = range(5)


# ----------------------------------------------------------------------------------------- NumPy twins

def activation_forward_np(x, act, slope):
    if act == RELU:
        return np.maximum(x, 0)
    if act == LEAKY_RELU:
        return np.where(x > 0, x, x * x.dtype.type(slope))
    if act == SIGMOID:
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    if act == TANH:
        return np.tanh(x)
    return x.copy()


def activation_backward_np(grad, y, act, slope):
    if act == RELU:
        return np.where(y <= 0, grad.dtype.type(0), grad)  # a NaN output passes grad, as in PyTorch
    if act == LEAKY_RELU:
        return np.where(y > 0, grad, grad * grad.dtype.type(slope))
    if act == SIGMOID:
        return grad * y * (1 - y)
    if act == TANH:
        return grad * (1 - y * y)
    return grad.copy()


def bias_act_forward_np(y, b, act, slope):
    y += b
    y[...] = activation_forward_np(y, act, slope)


def act_bias_backward_np(grad, y, act, slope):
    g = activation_backward_np(grad, y, act, slope)
    return g, g.sum(axis=0, dtype=np.float64).astype(g.dtype)


# ---------------------------------------------------------------------------------------- Numba kernels
# Serial is faster for these one-pass loops up to (2048, 1024) float32 on a 2-CPU machine.
_PAR = 1 << 20

@compiled(parallel_min=_PAR)
def _act_flat(x, out, act, slope):
    # x, out: (n,). Thread owns out[i].
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    s = x.dtype.type(slope)
    if act == RELU or act == LEAKY_RELU:
        sv = zero if act == RELU else s
        for i in prange(x.size):
            out[i] = _vmath.leaky(x[i], sv)
    elif act == SIGMOID:
        for i in prange(x.size):
            v = x[i]
            e = _vmath.exp(-abs(v))
            out[i] = (one if v >= zero else e) / (one + e)     # one division: selected numerator
    elif act == TANH:
        for i in prange(x.size):
            out[i] = _vmath.tanh(x[i])
    else:
        for i in prange(x.size):
            out[i] = x[i]


@compiled(parallel_min=_PAR)
def _act_grad_flat(grad, y, out, act, slope):
    # grad, y, out: (n,). Thread owns out[i].
    one = grad.dtype.type(1)
    zero = grad.dtype.type(0)
    s = grad.dtype.type(slope)
    if act == RELU or act == LEAKY_RELU:
        sv = zero if act == RELU else s
        for i in prange(grad.size):
            out[i] = _vmath.leaky_grad(grad[i], y[i], sv)
    elif act == SIGMOID:
        for i in prange(grad.size):
            out[i] = grad[i] * y[i] * (one - y[i])
    elif act == TANH:
        for i in prange(grad.size):
            out[i] = grad[i] * (one - y[i] * y[i])
    else:
        for i in prange(grad.size):
            out[i] = grad[i]


def activation_forward(x, act, slope):
    out = np.empty_like(x)
    _act_flat(x.reshape(-1), out.reshape(-1), act, slope)
    return out


def activation_backward(grad, y, act, slope):
    out = np.empty_like(grad)
    _act_grad_flat(grad.reshape(-1), y.reshape(-1), out.reshape(-1), act, slope)
    return out


# The serial build, callable from inside other kernels' loops (one row at a time).
_act_row = _act_flat.serial
_act_grad_row = _act_grad_flat.serial


@compiled(parallel_min=_PAR)
def bias_act_forward(y, b, act, slope):
    # y: (N, D) GEMM output, overwritten with act(y + b); b: (D,). Thread owns row i.
    for i in prange(y.shape[0]):
        row = y[i]
        for j in range(row.size):
            row[j] += b[j]
        _act_row(row, row, act, slope)


@compiled(parallel_min=4 * _PAR)
def _act_bias_backward(grad, y, g, gb, act, slope, block):
    # grad, y, g: (N, D); gb: (D,). Thread owns columns [j0, j1) of g and gb: it sweeps every row,
    # writing g and adding into gb in the same pass (serial: one block of all D columns).
    n, d = grad.shape
    for jb in prange((d + block - 1) // block):
        j0 = jb * block
        j1 = min(d, j0 + block)
        acc = gb[j0:j1]
        for i in range(n):
            gi = g[i, j0:j1]
            _act_grad_row(grad[i, j0:j1], y[i, j0:j1], gi, act, slope)
            for j in range(j1 - j0):
                acc[j] += gi[j]


def act_bias_backward(grad, y, act, slope):
    g = np.empty_like(grad)
    gb = np.zeros(grad.shape[1], grad.dtype)
    parallel = _act_bias_backward.runs_parallel(grad.size)
    _act_bias_backward(grad, y, g, gb, act, slope, 64 if parallel else max(grad.shape[1], 1))
    return g, gb


register("activation_forward", activation_forward, activation_forward_np)
register("activation_backward", activation_backward, activation_backward_np)
register("bias_act_forward", bias_act_forward, bias_act_forward_np)
register("act_bias_backward", act_bias_backward, act_bias_backward_np)
