"""Activation kernels (every code) against their NumPy twins on both compiled builds, and against
independent float64 formulas; the NaN, inf and signed-zero results of the newer codes.

Compile budget: every code is a build of its own, so the parallel build runs in float32 only (the
parallel and serial builds differ in their loops, not in their arithmetic).
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import activations as A

ACTS = sorted(A.NAMES)
DTYPES = [np.float32, np.float64]

shapes = st.one_of(
    st.tuples(st.integers(1, 40)),
    st.tuples(st.integers(1, 9), st.integers(1, 37)),
    st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 7)),
)
scales = st.sampled_from([1e-3, 1.0, 30.0, 1e4])
# Each code's constants (p0, p1), as its module passes them.
PARAMS = {
    A.LEAKY_RELU: st.sampled_from([0.01, 0.2, 1.7]).map(lambda s: (s, 0.0)),
    A.HARDTANH: st.sampled_from([(-1.0, 1.0), (0.0, 6.0), (-0.3, 2.5)]),
    A.ELU: st.sampled_from([1.0, 0.3, 2.5]).map(lambda a: (a, 0.0)),
    A.SOFTPLUS: st.sampled_from([(1.0, 20.0), (2.0, 5.0), (0.5, 1.0)]),
}


def params_for(act):
    return PARAMS.get(act, st.just(A.NO_PARAMS))


def build_dtype(build, dtype):
    return np.float32 if build == "parallel" else dtype


def data(shape, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if x.size > 2:
        x.reshape(-1)[0] = 0          # the kink
        x.reshape(-1)[1] = -0.0
    return x


_erfc = np.frompyfunc(math.erfc, 1, 1)
_K = math.sqrt(2 / math.pi)


def _threshold(x, params):
    """Softplus's branch, decided in x's dtype as the kernel (and PyTorch) decide it."""
    f = x.dtype.type
    return (x * f(params[0])) > f(params[1])


def reference_forward(x, act, params):
    """Independent float64 formulas (not the twin's)."""
    x64 = x.astype(np.float64)
    p0, p1 = params
    if act == A.SOFTPLUS:
        return np.where(_threshold(x, params), x64, np.logaddexp(0, p0 * x64) / p0)
    sig = 0.5 * (1 + np.tanh(0.5 * x64))
    return {
        A.IDENTITY: lambda: x64,
        A.RELU: lambda: np.maximum(x64, 0),
        A.LEAKY_RELU: lambda: np.where(x64 > 0, x64, p0 * x64),
        A.SIGMOID: lambda: sig,
        A.TANH: lambda: np.tanh(x64),
        A.HARDTANH: lambda: np.clip(x64, x.dtype.type(p0), x.dtype.type(p1)),
        A.GELU: lambda: x64 * 0.5 * _erfc(-x64 / math.sqrt(2)).astype(np.float64),
        A.GELU_TANH: lambda: 0.5 * x64 * (1 + np.tanh(_K * (x64 + 0.044715 * x64 ** 3))),
        A.SILU: lambda: x64 * sig,
        A.ELU: lambda: np.where(x64 > 0, x64, p0 * np.expm1(np.minimum(x64, 0))),
    }[act]()


def reference_derivative(x, act, params):
    """dy/dx from the input, in float64."""
    x64 = x.astype(np.float64)
    p0, p1 = params
    f = x.dtype.type
    sig = 0.5 * (1 + np.tanh(0.5 * x64))
    if act == A.GELU_TANH:
        t = np.tanh(_K * (x64 + 0.044715 * x64 ** 3))
        return 0.5 * (1 + t) + 0.5 * x64 * (1 - t * t) * _K * (1 + 3 * 0.044715 * x64 ** 2)
    if act == A.SOFTPLUS:
        return np.where(_threshold(x, params), 1.0, 0.5 * (1 + np.tanh(0.5 * p0 * x64)))
    with np.errstate(over="ignore"):
        return {
            A.IDENTITY: lambda: np.ones_like(x64),
            A.RELU: lambda: (x64 > 0) * 1.0,
            A.LEAKY_RELU: lambda: np.where(x64 > 0, 1.0, p0),
            A.SIGMOID: lambda: sig * (1 - sig),
            A.TANH: lambda: 1 - np.tanh(x64) ** 2,
            A.HARDTANH: lambda: ((x64 > f(p0)) & (x64 < f(p1))) * 1.0,
            A.GELU: lambda: (0.5 * _erfc(-x64 / math.sqrt(2)).astype(np.float64)
                             + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)),
            A.SILU: lambda: sig + x64 * sig * (1 - sig),
            A.ELU: lambda: np.where(x64 > 0, 1.0, p0 * np.exp(np.minimum(x64, 0))),
        }[act]()


def grad_tol(act, dtype):
    """Extra tolerance for the float32 gradients of tanh-GELU: where tanh is near -1, 1 + tanh
    keeps few bits, and one ulp of tanh moves the gradient by up to |x|^3 ulp (about 3e-6 at
    x = -5, in any implementation of that formula; PyTorch's too)."""
    return {"atol": 2e-5} if act == A.GELU_TANH and dtype == np.float32 else {}


def ref_tol(dtype, scale=1.0):
    return (dict(rtol=1e-5, atol=1e-6 * max(scale, 1)) if dtype == np.float32
            else dict(rtol=1e-12, atol=1e-14 * max(scale, 1)))


def saved(act, x, y):
    return A.saved_for_backward(act, x, y)


@pytest.mark.parametrize("act", ACTS)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), scale=scales, seed=st.integers(0, 2**16),
       draw=st.data())
def test_activation_forward_matches_twin(build, numba_ops, numpy_ops, close, act, shape, dtype, scale,
                                         seed, draw):
    dtype = build_dtype(build, dtype)
    params = draw.draw(params_for(act))
    x = data(shape, dtype, scale, seed)
    x_before = x.copy()
    y = numba_ops.activation_forward(x, act, params)
    ref = numpy_ops.activation_forward(x, act, params)
    assert y.dtype == x.dtype and y.shape == x.shape
    close(y, ref, dtype)
    close(y, reference_forward(x, act, params).astype(dtype), dtype, **ref_tol(dtype))
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(x, x_before)       # input untouched


@pytest.mark.parametrize("act", ACTS)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), scale=scales, seed=st.integers(0, 2**16),
       draw=st.data())
def test_activation_backward_matches_twin(build, numba_ops, numpy_ops, close, act, shape, dtype, scale,
                                          seed, draw):
    dtype = build_dtype(build, dtype)
    params = draw.draw(params_for(act))
    x = data(shape, dtype, scale, seed)
    s = saved(act, x, numpy_ops.activation_forward(x, act, params))
    grad = data(shape, dtype, 1.0, seed + 1)
    dx = numba_ops.activation_backward(grad, s, act, params)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    close(dx, numpy_ops.activation_backward(grad, s, act, params), dtype, **grad_tol(act, dtype))
    expect = grad.astype(np.float64) * reference_derivative(x, act, params)
    close(dx, expect, dtype, **{**ref_tol(dtype, scale), **grad_tol(act, dtype)})


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_saturate_without_overflow(build, numba_ops, dtype):
    dtype = build_dtype(build, dtype)
    x = np.array([-1e4, -745.0, -100.0, -1.0, 0.0, 1.0, 100.0, 745.0, 1e4], dtype)
    with np.errstate(all="raise"):
        y = numba_ops.activation_forward(x, A.SIGMOID, A.NO_PARAMS)
    assert np.all(np.isfinite(y))
    assert y[0] == 0 and y[-1] == 1 and y[4] == 0.5
    assert np.all(np.diff(y) >= 0)
    t = numba_ops.activation_forward(x, A.TANH, A.NO_PARAMS)
    assert t[0] == -1 and t[-1] == 1
    dy = numba_ops.activation_backward(np.ones_like(x), y, A.SIGMOID, A.NO_PARAMS)
    assert np.all(np.isfinite(dy)) and dy[0] == 0 and dy[-1] == 0


NAN, INF = np.nan, np.inf
SPECIAL_X = [NAN, INF, -INF, 0.0, -0.0, 1e4, -1e4]
LOG2 = math.log(2)
# code, params: forward and backward (grad 1) at SPECIAL_X, as PyTorch's vectorised CPU kernels
# give them (signs of zero included).
SPECIAL = {
    (A.HARDTANH, (-1.0, 1.0)): ([NAN, 1, -1, 0.0, -0.0, 1, -1], [0, 0, 0, 1, 1, 0, 0]),
    (A.HARDTANH, (0.0, 6.0)): ([NAN, 6, 0, 0.0, -0.0, 6, 0], [0, 0, 0, 0, 0, 0, 0]),
    (A.GELU, A.NO_PARAMS): ([NAN, INF, NAN, 0.0, -0.0, 1e4, -0.0], [NAN, NAN, NAN, .5, .5, 1, 0]),
    (A.GELU_TANH, A.NO_PARAMS): ([NAN, INF, NAN, 0.0, -0.0, 1e4, -0.0],
                                 [NAN, NAN, NAN, .5, .5, 1, 0]),
    (A.SILU, A.NO_PARAMS): ([NAN, INF, NAN, 0.0, -0.0, 1e4, -0.0], [NAN, NAN, NAN, .5, .5, 1, 0]),
    (A.ELU, (1.0, 0.0)): ([NAN, INF, -1, 0.0, -0.0, 1e4, -1], [NAN, 1, 0, 1, 1, 1, 0]),
    (A.SOFTPLUS, (1.0, 20.0)): ([NAN, INF, 0.0, LOG2, LOG2, 1e4, 0.0],
                                [NAN, 1, 0, .5, .5, 1, 0]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act,params", list(SPECIAL))
def test_nan_inf_and_signed_zeros(build, numba_ops, numpy_ops, act, params, dtype):
    dtype = build_dtype(build, dtype)
    x = np.array(SPECIAL_X * 3, dtype)              # long enough for the vectorised loop body
    want_y, want_g = (np.array(v * 3, dtype) for v in SPECIAL[act, params])
    for ops in (numba_ops, numpy_ops):
        y = ops.activation_forward(x, act, params)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(np.signbit(y[~np.isnan(y)]), np.signbit(want_y[~np.isnan(y)]))
        g = ops.activation_backward(np.ones_like(x), saved(act, x, y), act, params)
        np.testing.assert_array_equal(g, want_g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_threshold_is_strict_and_in_the_datas_precision(build, numba_ops, dtype):
    """beta * x > threshold takes the linear branch (PyTorch's strict comparison, made after
    rounding beta * x to the data's dtype); at the threshold the log1p(exp) branch runs."""
    dtype = build_dtype(build, dtype)
    beta, threshold = 2.0, 5.0
    x = np.array([2.5, np.nextafter(dtype(2.5), dtype(3))] * 9, dtype)
    y = numba_ops.activation_forward(x, A.SOFTPLUS, (beta, threshold))
    g = numba_ops.activation_backward(np.ones_like(x), x, A.SOFTPLUS, (beta, threshold))
    assert y[1] == x[1] and g[1] == 1                         # above: linear
    np.testing.assert_allclose(y[0], math.log1p(math.exp(5.0)) / 2, rtol=1e-6)
    np.testing.assert_allclose(g[0], 1 / (1 + math.exp(-5.0)), rtol=1e-6)


@pytest.mark.parametrize("act", ACTS)
@given(n=st.integers(1, 9), d=st.integers(1, 41), dtype=st.sampled_from(DTYPES), scale=scales,
       seed=st.integers(0, 2**16), draw=st.data())
def test_bias_act_forward_matches_twin(build, numba_ops, numpy_ops, close, n, d, dtype, act, scale,
                                       seed, draw):
    dtype = build_dtype(build, dtype)
    params = draw.draw(params_for(act))
    z = data((n, d), dtype, scale, seed)
    b = data((d,), dtype, scale, seed + 7)
    ours, ref = z.copy(), z.copy()
    out = ours if act not in A.NEEDS_INPUT else np.empty_like(z)
    out_ref = ref if act not in A.NEEDS_INPUT else np.empty_like(z)
    assert numba_ops.bias_act_forward(ours, b, out, act, params) is None      # in place
    numpy_ops.bias_act_forward(ref, b, out_ref, act, params)
    close(out, out_ref, dtype)
    pre = z.astype(np.float64) + b
    close(ours, ref, dtype)                      # z + b, or act(z + b) when out is z
    if act in A.NEEDS_INPUT:
        close(ours, pre, dtype, **ref_tol(dtype, scale))
    close(out, reference_forward((z + b).astype(dtype), act, params), dtype,
          **ref_tol(dtype, scale))


@pytest.mark.parametrize("act", ACTS)
@given(n=st.integers(1, 40), d=st.integers(1, 41), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16), draw=st.data())
def test_act_bias_backward_matches_twin(build, numba_ops, numpy_ops, close, n, d, dtype, act, seed,
                                        draw):
    dtype = build_dtype(build, dtype)
    params = draw.draw(params_for(act))
    x = data((n, d), dtype, 2.0, seed)
    s = saved(act, x, numpy_ops.activation_forward(x, act, params))
    grad = data((n, d), dtype, 1.0, seed + 3)
    g, gb = numba_ops.act_bias_backward(grad, s, act, params)
    g_ref, gb_ref = numpy_ops.act_bias_backward(grad, s, act, params)
    assert g.dtype == gb.dtype == np.dtype(dtype)
    assert g.shape == (n, d) and gb.shape == (d,)
    close(g, g_ref, dtype, **grad_tol(act, dtype))
    sum_tol = {"atol": 1e-5 * (n if act == A.GELU_TANH else 1) if dtype == np.float32 else 1e-12}
    close(gb, gb_ref, dtype, **sum_tol)
    # The bias gradient is the column sum of g, computed independently in float64.
    close(gb, g_ref.astype(np.float64).sum(axis=0), dtype, **sum_tol)


@pytest.mark.parametrize("which", ["serial", "parallel"])
@pytest.mark.parametrize("act", ACTS)
def test_private_flat_helpers_each_build(which, act, numpy_ops, close):
    """Each code's ``_act_flat``, ``_act_grad_flat`` and ``_act_bias_backward`` called through
    ``.serial`` and ``.parallel`` directly, with column blocks that do and do not divide the 37
    columns."""
    dtype = np.float32
    rng = np.random.default_rng(act)
    x = rng.standard_normal((5, 37)).astype(dtype)
    params = {A.LEAKY_RELU: (0.1, 0.0), A.HARDTANH: (-0.5, 0.7), A.ELU: (0.8, 0.0),
              A.SOFTPLUS: (1.5, 2.0)}.get(act, A.NO_PARAMS)
    out = np.empty_like(x)
    getattr(A._act_flat[act], which)(x.reshape(-1), out.reshape(-1), *params)
    y = numpy_ops.activation_forward(x, act, params)
    close(out, y, dtype)
    s = saved(act, x, y)
    grad = rng.standard_normal(x.shape).astype(dtype)
    gout = np.empty_like(x)
    getattr(A._act_grad_flat[act], which)(grad.reshape(-1), s.reshape(-1), gout.reshape(-1),
                                          *params)
    close(gout, numpy_ops.activation_backward(grad, s, act, params), dtype, **grad_tol(act, dtype))
    g_ref, gb_ref = numpy_ops.act_bias_backward(grad, s, act, params)
    for block in (1, 16, 36, 37, 64):          # column blocks per thread; the last one may be short
        g = np.empty_like(x)
        gb = np.zeros(x.shape[1], dtype)
        getattr(A._act_bias_backward[act], which)(grad, s, g, gb, *params, block)
        close(g, gout, dtype, rtol=0, atol=0)            # the same kernel, row by row
        close(gb, gb_ref, dtype, atol=1e-4 if act == A.GELU_TANH else 1e-5)


def test_backward_reads_the_input_exactly_where_the_derivative_needs_it():
    assert A.NEEDS_INPUT == {A.GELU, A.GELU_TANH, A.SILU, A.ELU, A.SOFTPLUS}
    x, y = np.zeros(2), np.ones(2)
    for act in ACTS:
        assert A.saved_for_backward(act, x, y) is (x if act in A.NEEDS_INPUT else y)
