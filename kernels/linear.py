"""Linear layer: y = act(x @ w.T + b), with the bias and activation fused into one pass after the GEMM.

    x (N, in)   w (out, in)   b (out,) or None   y (N, out)

Forward:  GEMM through BLAS into y, then one compiled pass adds b and applies the activation.
Backward: one compiled pass gives the pre-activation gradient g and the bias gradient together
          (kernels.activations.act_bias_backward); then BLAS accumulates dw += g.T @ x in place
          (beta = 1, no temporary) and, when wanted, dx = g @ w.
Gradients are *added* into dw and db, as PyTorch accumulates into .grad.
"""
import numpy as np
from scipy.linalg import blas

from kernels._registry import register
from kernels.activations import (IDENTITY, _act_flat, act_bias_backward, act_bias_backward_np,
                                 activation_backward, activation_backward_np,
                                 activation_forward_np, bias_act_forward)

_GEMM = {np.dtype(np.float32): blas.sgemm, np.dtype(np.float64): blas.dgemm}


def linear_forward_np(x, w, b, act, slope):
    y = x @ w.T
    if b is not None:
        y += b
    return activation_forward_np(y, act, slope)


def linear_backward_np(grad, x, w, y, act, slope, dw, db, need_dx):
    if db is not None:
        g, gb = act_bias_backward_np(grad, y, act, slope)
        db += gb
    else:
        g = activation_backward_np(grad, y, act, slope)
    dw += g.T @ x
    return g @ w if need_dx else None


def linear_forward(x, w, b, act, slope):
    y = np.matmul(x, w.T)
    if b is not None:
        bias_act_forward(y, b, act, slope)
    elif act != IDENTITY:
        flat = y.reshape(-1)
        _act_flat(flat, flat, act, slope)
    return y


def linear_backward(grad, x, w, y, act, slope, dw, db, need_dx):
    if db is not None:
        g, gb = act_bias_backward(grad, y, act, slope)
        db += gb
    elif act != IDENTITY:
        g = activation_backward(grad, y, act, slope)
    else:
        g = grad
    # dw (out, in), C order, is the Fortran-order array dw.T (in, out) = x.T @ g: BLAS adds into it.
    _GEMM[dw.dtype](1.0, x.T, g.T, beta=1.0, c=dw.T, trans_b=1, overwrite_c=1)
    return np.matmul(g, w) if need_dx else None


register("linear_forward", linear_forward, linear_forward_np)
register("linear_backward", linear_backward, linear_backward_np)
