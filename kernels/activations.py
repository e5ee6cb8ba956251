"""Elementwise activations, and the bias+activation passes fused around a GEMM.

An activation is an integer code and a pair of constants ``params = (p0, p1)`` (Python floats, cast
to the data's dtype as PyTorch casts its Scalars). One source serves every code, compiled once per
code so that each build holds its own branch only (see _per_code). Each backward reads one saved
array, ``s``: the activation's output y where the derivative follows from it, its input x where it
does not (the codes in NEEDS_INPUT). A layer keeps whichever its code names, and nothing else:

    code        y                                    backward reads   dy/dx
    IDENTITY    x                                    y                1
    RELU        max(x, 0)                            y                0 if y <= 0 else 1
    LEAKY_RELU  x if x > 0 else p0 x  (p0 > 0)       y                1 if y > 0 else p0
    SIGMOID     1 / (1 + exp(-x)), from exp(-|x|)    y                y (1 - y)
    TANH        tanh(x)                              y                1 - y^2
    HARDTANH    min(max(x, p0), p1)  (p0 < p1)       y                1 if p0 < y < p1 else 0
    GELU        x/2 (1 + erf(x / sqrt 2))            x                Phi(x) + x phi(x)
    GELU_TANH   x/2 (1 + tanh(k (x + c x^3)))        x                PyTorch's expression
    SILU        x / (1 + exp(-x))                    x                sig (1 + x (1 - sig))
    ELU         x if x > 0 else p0 expm1(x)          x                1 if x > 0 else p0 exp(x)
    SOFTPLUS    x if p0 x > p1 else                  x                1 if p0 x > p1 else
                log1p(exp(p0 x)) / p0                                 z / (z + 1), z = exp(p0 x)

(ReLU6 is HARDTANH with (0, 6); GELU_TANH's k = sqrt(2/pi), c = 0.044715; Phi and phi are the
normal distribution's CDF and density.) HARDTANH's rule is PyTorch's hardtanh_backward on the
input, x <= p0 or x >= p1 giving 0: the output clamps exactly, so y tells the same.

Each formula is PyTorch's CPU kernel's, in its order of operations, so the NaN and inf results are
PyTorch's too: ReLU and LeakyReLU pass NaN and give relu(-inf) = 0 (a NaN output passes the
gradient under ReLU and scales it by p0 under LeakyReLU: _vmath.leaky); GELU and SiLU give NaN at
-inf (and GELU_TANH too), their gradients NaN at +-inf; Hardtanh's gradient is 0 at NaN and ELU's
NaN, as PyTorch's vectorised kernels give (its scalar loop, which runs only on the last few
elements of a tensor, passes the gradient). Where PyTorch's float32 AVX-512 GELU differs from its
own formula (NaN at +inf, inf above about 1.7e38) this follows the formula, as its float64 does.

The compiled kernels use kernels/_vmath.py's exp, expm1, log1p, tanh and erf (arithmetic only, so
their loops vectorise; Numba's np.exp etc. are scalar calls into libm). The NumPy twins run the same
formulas on NumPy's functions (scipy.special.erf for erf).

Shapes: activation_forward/backward take x, s, grad of any shape (run on flat views);
bias_act_forward takes z (N, D), b (D,) and out (N, D), which is z itself when the backward reads y;
act_bias_backward takes grad, s (N, D).
"""
import numpy as np
import scipy.special
from numba import njit, prange

from kernels import _vmath
from kernels._registry import OPTIONS, _renamed, compiled, register

(IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, HARDTANH, GELU, GELU_TANH, SILU, ELU,
 SOFTPLUS) = range(11)
# The codes whose backward reads the input x; every other code's reads the output y.
NEEDS_INPUT = frozenset((GELU, GELU_TANH, SILU, ELU, SOFTPLUS))
NO_PARAMS = (0.0, 0.0)

# PyTorch's GELU constants: <cmath>'s, combined in float64, cast to the data's dtype in the kernels.
_SQRT1_2 = 0.70710678118654752440                      # M_SQRT1_2
_M_SQRT2, _M_2_SQRTPI = 1.41421356237309504880, 1.12837916709551257390
_INV_SQRT_2PI = _M_2_SQRTPI * _SQRT1_2 * 0.5           # the normal density's factor
_SQRT_2_PI = _M_SQRT2 * _M_2_SQRTPI * 0.5              # GELU_TANH's k
_KAPPA = 0.044715


def saved_for_backward(act, x, y):
    """The array the backward of ``act`` reads: its input ``x`` or its output ``y``."""
    return x if act in NEEDS_INPUT else y


# -------------------------------------------------------------------------------------- NumPy twins

def _forward_np(x, act, params):
    f = x.dtype.type
    p0, p1 = f(params[0]), f(params[1])
    one, half = f(1), f(0.5)
    if act == RELU:
        return np.maximum(x, 0)
    if act == LEAKY_RELU:
        return np.where(x > 0, x, x * p0)
    if act == SIGMOID:
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    if act == TANH:
        return np.tanh(x)
    if act == HARDTANH:
        c = np.where(x < p0, p0, x)
        return np.where(c > p1, p1, c)
    if act == GELU:
        return x * half * (one + scipy.special.erf(x * f(_SQRT1_2)))
    if act == GELU_TANH:
        inner = f(_SQRT_2_PI) * (x + f(_KAPPA) * (x * x * x))
        return half * x * (one + np.tanh(inner))
    if act == SILU:
        return x / (one + np.exp(-x))
    if act == ELU:
        return np.where(x > 0, x, np.expm1(x) * p0)
    if act == SOFTPLUS:
        bx = x * p0
        return np.where(bx > p1, x, np.log1p(np.exp(bx)) / p0)
    return x.copy()


def _backward_np(grad, s, act, params):
    f = grad.dtype.type
    p0, p1 = f(params[0]), f(params[1])
    zero, one, half = f(0), f(1), f(0.5)
    if act == RELU:
        return np.where(s <= 0, zero, grad)  # a NaN output passes grad, as in PyTorch
    if act == LEAKY_RELU:
        return np.where(s > 0, grad, grad * p0)
    if act == SIGMOID:
        return grad * s * (1 - s)
    if act == TANH:
        return grad * (1 - s * s)
    if act == HARDTANH:
        return np.where((s > p0) & (s < p1), grad, zero)
    if act == GELU:
        cdf = half * (one + scipy.special.erf(s * f(_SQRT1_2)))
        pdf = f(_INV_SQRT_2PI) * np.exp(s * s * f(-0.5))
        return grad * (cdf + s * pdf)
    if act == GELU_TANH:
        k = f(_SQRT_2_PI)
        s2 = s * s
        t = np.tanh(k * (s + f(_KAPPA) * (s2 * s)))
        inner_d = k * (one + f(3) * f(_KAPPA) * s2)
        return grad * (half * (one + t) + half * s * (one - t * t) * inner_d)
    if act == SILU:
        sig = one / (one + np.exp(-s))
        return grad * sig * (one + s * (one - sig))
    if act == ELU:
        return np.where(s > 0, grad, grad * p0 * np.exp(s))
    if act == SOFTPLUS:
        bs = s * p0
        z = np.exp(bs)
        return np.where(bs > p1, grad, grad * z / (z + one))
    return grad.copy()


def activation_forward_np(x, act, params):
    with np.errstate(over="ignore", invalid="ignore"):   # inf and NaN are results, as in PyTorch
        return _forward_np(x, act, params)


def activation_backward_np(grad, s, act, params):
    with np.errstate(over="ignore", invalid="ignore"):
        return _backward_np(grad, s, act, params)


def bias_act_forward_np(z, b, out, act, params):
    z += b
    out[...] = activation_forward_np(z, act, params)


def act_bias_backward_np(grad, s, act, params):
    g = activation_backward_np(grad, s, act, params)
    return g, g.sum(axis=0, dtype=np.float64).astype(g.dtype)


# ------------------------------------------------------------------------------------ Numba kernels
# The element functions below read their activation code as the global ACT, and each kernel is
# compiled once per code with ACT (and the element functions it calls) bound to that code
# (_registry.compiled's bind): Numba drops the other codes' branches before it compiles, so a model
# compiles only the activations it uses (one build holding all eleven branches took 18 s to compile
# in its parallel form, against about 1 s for one branch). The element functions are inlined into
# the kernels' loops (inline="always"): a kernel is one compilation, not one per helper it calls.
# The Python wrappers pick the build by their ``act`` argument.
ACT = None                     # bound per build
_act_one = _act_grad_one = None    # bound per build to that code's element functions

# Serial is faster for these one-pass loops up to (2048, 1024) float32 on a 2-CPU machine.
_PAR = 1 << 20


def _act_one_src(v, f, p0, p1):
    # act(v) for one element v of type f (the data's scalar type); p0, p1: the constants, as f.
    zero, one, half = f(0), f(1), f(0.5)
    if ACT == RELU or ACT == LEAKY_RELU:
        return _vmath.leaky(v, zero if ACT == RELU else p0)
    elif ACT == SIGMOID:
        e = _vmath.exp(-abs(v))
        return (one if v >= zero else e) / (one + e)         # one division: selected numerator
    elif ACT == TANH:
        return _vmath.tanh(v)
    elif ACT == HARDTANH:
        c = p0 if v < p0 else v                              # NaN passes both
        return p1 if c > p1 else c
    elif ACT == GELU:
        return v * half * (one + _vmath.erf(v * f(_SQRT1_2)))
    elif ACT == GELU_TANH:
        return half * v * (one + _vmath.tanh(f(_SQRT_2_PI) * (v + f(_KAPPA) * (v * v * v))))
    elif ACT == SILU:
        return v / (one + _vmath.exp(-v))
    elif ACT == ELU:
        m = _vmath.expm1(v) * p0
        return v if v > zero else m
    elif ACT == SOFTPLUS:
        bv = v * p0
        soft = _vmath.log1p(_vmath.exp(bv)) / p0
        return v if bv > p1 else soft
    else:
        return v


def _act_grad_one_src(g, v, f, p0, p1):
    # The gradient g through the activation, for one element; v is its x or y as the code needs.
    zero, one, half = f(0), f(1), f(0.5)
    if ACT == RELU or ACT == LEAKY_RELU:
        return _vmath.leaky_grad(g, v, zero if ACT == RELU else p0)
    elif ACT == SIGMOID:
        return g * v * (one - v)
    elif ACT == TANH:
        return g * (one - v * v)
    elif ACT == HARDTANH:
        return g if (v > p0) & (v < p1) else zero            # NaN: 0
    elif ACT == GELU:
        cdf = half * (one + _vmath.erf(v * f(_SQRT1_2)))
        pdf = f(_INV_SQRT_2PI) * _vmath.exp(v * v * f(-0.5))
        return g * (cdf + v * pdf)
    elif ACT == GELU_TANH:
        kb, k3 = f(_SQRT_2_PI), f(3) * f(_KAPPA)
        v2 = v * v
        t = _vmath.tanh(kb * (v + f(_KAPPA) * (v2 * v)))
        right_d = half * v * (one - t * t) * (kb * (one + k3 * v2))
        return g * (half * (one + t) + right_d)
    elif ACT == SILU:
        sig = one / (one + _vmath.exp(-v))
        return g * sig * (one + v * (one - sig))
    elif ACT == ELU:
        m = g * p0 * _vmath.exp(v)
        return g if v > zero else m
    elif ACT == SOFTPLUS:
        bv = v * p0
        z = _vmath.exp(bv)
        m = g * z / (z + one)
        return g if bv > p1 else m
    else:
        return g


def _act_flat_src(x, out, c0, c1):
    # x, out: (n,), out may be x; c0, c1: the constants. Thread owns out[i].
    f = x.dtype.type
    p0, p1 = f(c0), f(c1)
    for i in prange(x.size):
        out[i] = _act_one(x[i], f, p0, p1)


def _act_grad_flat_src(grad, s, out, c0, c1):
    # grad, s, out: (n,); s is x or y as the code needs. Thread owns out[i].
    f = grad.dtype.type
    p0, p1 = f(c0), f(c1)
    for i in prange(grad.size):
        out[i] = _act_grad_one(grad[i], s[i], f, p0, p1)


def _bias_act_src(z, b, out, c0, c1):
    # z: (N, D) GEMM output, gets z + b (the pre-activation) in place; out: (N, D), gets act(z + b)
    # (out is z when the backward reads y: then z ends as act(z + b)); b: (D,). Thread owns row i.
    f = z.dtype.type
    p0, p1 = f(c0), f(c1)
    for i in prange(z.shape[0]):
        row, o = z[i], out[i]
        for j in range(row.size):
            row[j] += b[j]
        for j in range(row.size):
            o[j] = _act_one(row[j], f, p0, p1)


def _act_bias_backward_src(grad, s, g, gb, c0, c1, block):
    # grad, s, g: (N, D); gb: (D,). Thread owns columns [j0, j1) of g and gb: it sweeps every row,
    # writing g and adding into gb in the same pass (serial: one block of all D columns).
    f = grad.dtype.type
    p0, p1 = f(c0), f(c1)
    n, d = grad.shape
    for jb in prange((d + block - 1) // block):
        j0 = jb * block
        j1 = min(d, j0 + block)
        acc = gb[j0:j1]
        for i in range(n):
            gr, sr, gi = grad[i, j0:j1], s[i, j0:j1], g[i, j0:j1]
            for j in range(j1 - j0):
                gi[j] = _act_grad_one(gr[j], sr[j], f, p0, p1)
            for j in range(j1 - j0):
                acc[j] += gi[j]


NAMES = {IDENTITY: "identity", RELU: "relu", LEAKY_RELU: "leaky_relu", SIGMOID: "sigmoid",
         TANH: "tanh", HARDTANH: "hardtanh", GELU: "gelu", GELU_TANH: "gelu_tanh", SILU: "silu",
         ELU: "elu", SOFTPLUS: "softplus"}


def _element(source, act, name):
    """``source`` with ACT bound to ``act``, compiled to be inlined into a kernel's loop."""
    return njit(inline="always", **OPTIONS)(_renamed(source, f"_{name}", dict(ACT=act)))


def _per_code(parallel_min, source):
    """{code: compiled build of ``source`` with ACT and its element functions bound to the code}."""
    return {act: compiled(parallel_min, variant=name,
                          bind=dict(ACT=act, _act_one=_element(_act_one_src, act, name),
                                    _act_grad_one=_element(_act_grad_one_src, act, name)))(source)
            for act, name in NAMES.items()}


_act_flat = _per_code(_PAR, _act_flat_src)
_act_grad_flat = _per_code(_PAR, _act_grad_flat_src)
_bias_act = _per_code(_PAR, _bias_act_src)
_act_bias_backward = _per_code(4 * _PAR, _act_bias_backward_src)


# The builds take the two constants as scalars (a tuple argument costs Numba's dispatcher about
# 0.5 us more per call, which the small MLP kernels notice).
def activation_forward(x, act, params):
    out = np.empty_like(x)
    _act_flat[act](x.reshape(-1), out.reshape(-1), *params)
    return out


def activation_backward(grad, s, act, params):
    out = np.empty_like(grad)
    _act_grad_flat[act](grad.reshape(-1), s.reshape(-1), out.reshape(-1), *params)
    return out


# Without an activation, the bias add runs in NumPy wherever the serial kernel would (within half a
# microsecond of it up to batch 64 at 10 outputs, faster from 128 x 128 up), and so does the bias
# gradient up to _NUMPY_BIAS_GRAD elements (a copy and a column sum; the kernel is faster beyond):
# a model whose only Linear without activation is a small output layer compiles no identity kernel.
# The column sum adds the rows in order, as the kernel does, where there is more than one column
# (over a single column NumPy sums pairwise).
_NUMPY_BIAS_GRAD = 1 << 10


def bias_act_forward(z, b, out, act, params):
    kernel = _bias_act[act]
    if act == IDENTITY and not kernel.runs_parallel(z.size):
        np.add(z, b, out=z)
        if out is not z:
            out[...] = z
        return
    kernel(z, b, out, *params)


def act_bias_backward(grad, s, act, params):
    kernel = _act_bias_backward[act]
    if (act == IDENTITY and grad.shape[1] > 1 and grad.size <= _NUMPY_BIAS_GRAD
            and not kernel.runs_parallel(grad.size)):
        return grad.copy(), np.add.reduce(grad, axis=0, initial=0)
    g = np.empty_like(grad)
    gb = np.zeros(grad.shape[1], grad.dtype)
    block = 64 if kernel.runs_parallel(grad.size) else max(grad.shape[1], 1)
    kernel(grad, s, g, gb, *params, block)
    return g, gb


register("activation_forward", activation_forward, activation_forward_np)
register("activation_backward", activation_backward, activation_backward_np)
register("bias_act_forward", bias_act_forward, bias_act_forward_np)
register("act_bias_backward", act_bias_backward, act_bias_backward_np)
