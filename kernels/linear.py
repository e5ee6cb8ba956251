"""Linear layer: y = act(x @ w.T + b), the bias and activation fused into one pass after the GEMM.

    x (N, in)   w (out, in)   b (out,) or None   y (N, out)   act, params: kernels.activations

Forward:  GEMM through BLAS into z, then one compiled pass adds b and applies the activation: in
          place (y is z) when the activation's backward reads its output, into a new y otherwise
          (z, the pre-activation, is what that backward reads). Returns y and the saved array
          (y or z), which is all the backward needs besides x and w.
Backward: one compiled pass gives the pre-activation gradient g and the bias gradient together
          (kernels.activations.act_bias_backward); then BLAS accumulates dw += g.T @ x in place
          (beta = 1, no temporary) and, when wanted, dx = g @ w.
Gradients are *added* into dw and db, as PyTorch accumulates into .grad.
"""
import numpy as np
from scipy.linalg import blas

from kernels._registry import register
from kernels.activations import (IDENTITY, NEEDS_INPUT, _act_flat, act_bias_backward,
                                 act_bias_backward_np, activation_backward, activation_backward_np,
                                 activation_forward_np, bias_act_forward)

_GEMM = {np.dtype(np.float32): blas.sgemm, np.dtype(np.float64): blas.dgemm}


def linear_forward_np(x, w, b, act, params):
    z = x @ w.T
    if b is not None:
        z += b
    y = activation_forward_np(z, act, params)
    return y, (z if act in NEEDS_INPUT else y)


def linear_backward_np(grad, x, w, saved, act, params, dw, db, need_dx):
    if db is not None:
        g, gb = act_bias_backward_np(grad, saved, act, params)
        db += gb
    else:
        g = activation_backward_np(grad, saved, act, params)
    dw += g.T @ x
    return g @ w if need_dx else None


def linear_forward(x, w, b, act, params):
    z = np.matmul(x, w.T)
    y = np.empty_like(z) if act in NEEDS_INPUT else z
    if b is not None:
        bias_act_forward(z, b, y, act, params)
    elif act != IDENTITY:
        _act_flat[act](z.reshape(-1), y.reshape(-1), *params)
    return y, (z if act in NEEDS_INPUT else y)


def linear_backward(grad, x, w, saved, act, params, dw, db, need_dx):
    if db is not None:
        g, gb = act_bias_backward(grad, saved, act, params)
        db += gb
    elif act != IDENTITY:
        g = activation_backward(grad, saved, act, params)
    else:
        g = grad
    # dw (out, in), C order, is the Fortran-order array dw.T (in, out) = x.T @ g: BLAS adds into it.
    _GEMM[dw.dtype](1.0, x.T, g.T, beta=1.0, c=dw.T, trans_b=1, overwrite_c=1)
    return np.matmul(g, w) if need_dx else None


register("linear_forward", linear_forward, linear_forward_np)
register("linear_backward", linear_backward, linear_backward_np)
