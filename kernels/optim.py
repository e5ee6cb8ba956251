"""Optimizer updates, in place, over one flat parameter array and its gradient (torch.optim's formulas).

    p, g and every state array: (n,) of one dtype. Scalars arrive as Python floats and are cast to the
    parameters' dtype, so float32 parameters are updated in float32 arithmetic.

sgd:      g' = g + wd p;  with momentum: b = g' on the first step, else b = mu b + (1 - dampening) g';
          d = g' + mu b (nesterov) or b;  p -= lr d
rmsprop:  g' = g + wd p;  s = alpha s + (1 - alpha) g'^2;  centered: a = alpha a + (1 - alpha) g',
          den = sqrt(s - a^2) + eps, else den = sqrt(s) + eps;
          with momentum: b = mu b + g'/den, p -= lr b;  else p -= lr g'/den
adam:     g' = g + wd p;  m += (1 - b1)(g' - m);  v = b2 v + (1 - b2) g'^2;  amsgrad: vmax = max(vmax, v)
          p = decay p - lr / (1 - b1^t) * m / (sqrt(v or vmax) / sqrt(1 - b2^t) + eps)
          (decay = 1 - lr wd' with AdamW's decoupled weight decay wd' and wd = 0; 1 for Adam)
nadam:    g' = g + wd p;  m += (1 - b1)(g' - m);  v = b2 v + (1 - b2) g'^2;  den = sqrt(v / (1 - b2^t)) + eps
          p = decay p - c_g g'/den - c_m m/den, with c_g, c_m from the momentum-decay schedule (see
          the optimizer class, which computes the scalars for step t); decay as adam's.

Each element is independent: the thread owns index i of every array.
"""
import math

import numpy as np
from numba import prange

from kernels._registry import kernel

PARALLEL_MIN = 1 << 22  # measured: serial faster up to 670k parameters here


# ----------------------------------------------------------------------------------------- NumPy twins
# Same arithmetic, in the parameters' dtype.

def sgd_step_np(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    t = p.dtype.type
    d = g + t(weight_decay) * p if weight_decay else g.copy()
    if momentum:
        if first:
            buf[...] = d
        else:
            buf *= t(momentum)
            buf += t(1 - dampening) * d
        d = d + t(momentum) * buf if nesterov else buf
    p -= t(lr) * d


def rmsprop_step_np(p, g, sq, gavg, buf, lr, alpha, eps, weight_decay, momentum, centered):
    t = p.dtype.type
    d = g + t(weight_decay) * p if weight_decay else g
    sq *= t(alpha)
    sq += t(1 - alpha) * d * d
    if centered:
        gavg += t(1 - alpha) * (d - gavg)
        den = np.sqrt(sq - gavg * gavg) + t(eps)
    else:
        den = np.sqrt(sq) + t(eps)
    if momentum:
        buf *= t(momentum)
        buf += d / den
        p -= t(lr) * buf
    else:
        p -= t(lr) * (d / den)


def adam_step_np(p, g, m, v, vmax, lr, beta1, beta2, eps, weight_decay, step, amsgrad, decay=1.0):
    t = p.dtype.type
    d = g + t(weight_decay) * p if weight_decay else g
    m += t(1 - beta1) * (d - m)
    v *= t(beta2)
    v += t(1 - beta2) * d * d
    if amsgrad:
        np.maximum(vmax, v, out=vmax)
    den = np.sqrt(vmax if amsgrad else v) / t(math.sqrt(1 - beta2 ** step)) + t(eps)
    if decay != 1.0:
        p *= t(decay)
    p -= t(lr / (1 - beta1 ** step)) * (m / den)


def nadam_step_np(p, g, m, v, beta1, beta2, eps, weight_decay, bias2, coef_g, coef_m, decay=1.0):
    t = p.dtype.type
    d = g + t(weight_decay) * p if weight_decay else g
    m += t(1 - beta1) * (d - m)
    v *= t(beta2)
    v += t(1 - beta2) * d * d
    den = np.sqrt(v / t(bias2)) + t(eps)
    if decay != 1.0:
        p *= t(decay)
    p -= t(coef_g) * (d / den)
    p -= t(coef_m) * (m / den)


# ---------------------------------------------------------------------------------------- Numba kernels

@kernel(sgd_step_np, PARALLEL_MIN)
def sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    t = p.dtype.type
    lr_, mu, damp, wd = t(lr), t(momentum), t(1 - dampening), t(weight_decay)
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        if momentum != 0:
            b = d if first else mu * buf[i] + damp * d
            buf[i] = b
            d = d + mu * b if nesterov else b
        p[i] -= lr_ * d


@kernel(rmsprop_step_np, PARALLEL_MIN)
def rmsprop_step(p, g, sq, gavg, buf, lr, alpha, eps, weight_decay, momentum, centered):
    t = p.dtype.type
    lr_, a, a1, eps_, wd, mu = t(lr), t(alpha), t(1 - alpha), t(eps), t(weight_decay), t(momentum)
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        s = a * sq[i] + a1 * d * d
        sq[i] = s
        if centered:
            ga = gavg[i] + a1 * (d - gavg[i])
            gavg[i] = ga
            den = np.sqrt(s - ga * ga) + eps_
        else:
            den = np.sqrt(s) + eps_
        if momentum != 0:
            b = mu * buf[i] + d / den
            buf[i] = b
            p[i] -= lr_ * b
        else:
            p[i] -= lr_ * (d / den)


@kernel(adam_step_np, PARALLEL_MIN)
def adam_step(p, g, m, v, vmax, lr, beta1, beta2, eps, weight_decay, step, amsgrad, decay=1.0):
    t = p.dtype.type
    b1, b2, eps_, wd, dec = t(1 - beta1), t(beta2), t(eps), t(weight_decay), t(decay)
    b21 = t(1 - beta2)
    step_size = t(lr / (1 - beta1 ** step))
    bc2_sqrt = t(math.sqrt(1 - beta2 ** step))
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        mi = m[i] + b1 * (d - m[i])
        vi = b2 * v[i] + b21 * d * d
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        p[i] = p[i] * dec - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps_))


@kernel(nadam_step_np, PARALLEL_MIN)
def nadam_step(p, g, m, v, beta1, beta2, eps, weight_decay, bias2, coef_g, coef_m, decay=1.0):
    t = p.dtype.type
    b1, b2, b21, eps_, wd = t(1 - beta1), t(beta2), t(1 - beta2), t(eps), t(weight_decay)
    dec = t(decay)
    bias2_, cg, cm = t(bias2), t(coef_g), t(coef_m)
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        mi = m[i] + b1 * (d - m[i])
        vi = b2 * v[i] + b21 * d * d
        m[i] = mi
        v[i] = vi
        den = np.sqrt(vi / bias2_) + eps_
        pi = p[i] * dec
        pi -= cg * (d / den)
        p[i] = pi - cm * (mi / den)
