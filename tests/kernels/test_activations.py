"""Activation kernels (all five codes) against their NumPy twins, on both compiled builds."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import activations as A

ACTS = [A.IDENTITY, A.RELU, A.LEAKY_RELU, A.SIGMOID, A.TANH]
DTYPES = [np.float32, np.float64]

shapes = st.one_of(
    st.tuples(st.integers(1, 40)),
    st.tuples(st.integers(1, 9), st.integers(1, 37)),
    st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 7)),
)
scales = st.sampled_from([1e-3, 1.0, 30.0, 1e4])
slopes = st.sampled_from([0.01, 0.2, 1.7])


def data(shape, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if x.size > 2:
        x.reshape(-1)[0] = 0          # the kink
        x.reshape(-1)[1] = -0.0
    return x


def reference_forward(x, act, slope):
    """Independent float64 formulas (not the twin)."""
    x64 = x.astype(np.float64)
    return {
        A.IDENTITY: x64,
        A.RELU: np.maximum(x64, 0),
        A.LEAKY_RELU: np.where(x64 > 0, x64, slope * x64),
        A.SIGMOID: 0.5 * (1 + np.tanh(0.5 * x64)),
        A.TANH: np.tanh(x64),
    }[act]


@pytest.mark.parametrize("act", ACTS)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), scale=scales, slope=slopes,
       seed=st.integers(0, 2**16))
def test_activation_forward_matches_twin(build, numba_ops, numpy_ops, close, act, shape, dtype, scale,
                                         slope, seed):
    x = data(shape, dtype, scale, seed)
    x_before = x.copy()
    y = numba_ops.activation_forward(x, act, slope)
    ref = numpy_ops.activation_forward(x, act, slope)
    assert y.dtype == x.dtype and y.shape == x.shape
    close(y, ref, dtype)
    close(y, reference_forward(x, act, slope).astype(dtype), dtype, rtol=1e-5 if dtype == np.float32
          else 1e-12, atol=1e-6 if dtype == np.float32 else 1e-14)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(x, x_before)       # input untouched


@pytest.mark.parametrize("act", ACTS)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), scale=scales, slope=slopes,
       seed=st.integers(0, 2**16))
def test_activation_backward_matches_twin(build, numba_ops, numpy_ops, close, act, shape, dtype, scale,
                                          slope, seed):
    x = data(shape, dtype, scale, seed)
    y = numpy_ops.activation_forward(x, act, slope)
    grad = data(shape, dtype, 1.0, seed + 1)
    dx = numba_ops.activation_backward(grad, y, act, slope)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    close(dx, numpy_ops.activation_backward(grad, y, act, slope), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_saturate_without_overflow(build, numba_ops, dtype):
    x = np.array([-1e4, -745.0, -100.0, -1.0, 0.0, 1.0, 100.0, 745.0, 1e4], dtype)
    with np.errstate(all="raise"):
        y = numba_ops.activation_forward(x, A.SIGMOID, 0.0)
    assert np.all(np.isfinite(y))
    assert y[0] == 0 and y[-1] == 1 and y[4] == 0.5
    assert np.all(np.diff(y) >= 0)
    t = numba_ops.activation_forward(x, A.TANH, 0.0)
    assert t[0] == -1 and t[-1] == 1
    dy = numba_ops.activation_backward(np.ones_like(x), y, A.SIGMOID, 0.0)
    assert np.all(np.isfinite(dy)) and dy[0] == 0 and dy[-1] == 0


@given(n=st.integers(1, 9), d=st.integers(1, 41), dtype=st.sampled_from(DTYPES),
       act=st.sampled_from(ACTS), scale=scales, slope=slopes, seed=st.integers(0, 2**16))
def test_bias_act_forward_matches_twin(build, numba_ops, numpy_ops, close, n, d, dtype, act, scale,
                                       slope, seed):
    y = data((n, d), dtype, scale, seed)
    b = data((d,), dtype, scale, seed + 7)
    ours, ref = y.copy(), y.copy()
    assert numba_ops.bias_act_forward(ours, b, act, slope) is None      # in place
    numpy_ops.bias_act_forward(ref, b, act, slope)
    close(ours, ref, dtype)
    close(ours, reference_forward(y.astype(np.float64) + b, act, slope), dtype, rtol=1e-5,
          atol=1e-6 * scale if dtype == np.float32 else 1e-12 * scale)


@given(n=st.integers(1, 40), d=st.integers(1, 41), dtype=st.sampled_from(DTYPES),
       act=st.sampled_from(ACTS), slope=slopes, seed=st.integers(0, 2**16))
def test_act_bias_backward_matches_twin(build, numba_ops, numpy_ops, close, n, d, dtype, act, slope,
                                        seed):
    y = numpy_ops.activation_forward(data((n, d), dtype, 2.0, seed), act, slope)
    grad = data((n, d), dtype, 1.0, seed + 3)
    g, gb = numba_ops.act_bias_backward(grad, y, act, slope)
    g_ref, gb_ref = numpy_ops.act_bias_backward(grad, y, act, slope)
    assert g.dtype == gb.dtype == np.dtype(dtype)
    assert g.shape == (n, d) and gb.shape == (d,)
    close(g, g_ref, dtype)
    close(gb, gb_ref, dtype, atol=1e-5 if dtype == np.float32 else 1e-12)
    # The bias gradient is the column sum of g, computed independently in float64.
    close(gb, g_ref.astype(np.float64).sum(axis=0), dtype, atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("which", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_private_flat_helpers_each_build(which, dtype, act, numpy_ops, close):
    """``_act_flat``, ``_act_grad_flat`` and ``_act_bias_backward`` called through ``.serial`` and
    ``.parallel`` directly, with column blocks that do and do not divide the 37 columns."""
    rng = np.random.default_rng(act)
    x = rng.standard_normal((5, 37)).astype(dtype)
    slope = 0.1
    out = np.empty_like(x)
    getattr(A._act_flat, which)(x.reshape(-1), out.reshape(-1), act, slope)
    y = numpy_ops.activation_forward(x, act, slope)
    close(out, y, dtype)
    grad = rng.standard_normal(x.shape).astype(dtype)
    gout = np.empty_like(x)
    getattr(A._act_grad_flat, which)(grad.reshape(-1), y.reshape(-1), gout.reshape(-1), act, slope)
    close(gout, numpy_ops.activation_backward(grad, y, act, slope), dtype)
    g_ref, gb_ref = numpy_ops.act_bias_backward(grad, y, act, slope)
    for block in (1, 16, 36, 37, 64):          # column blocks per thread; the last one may be short
        g = np.empty_like(x)
        gb = np.zeros(x.shape[1], dtype)
        getattr(A._act_bias_backward, which)(grad, y, g, gb, act, slope, block)
        close(g, g_ref, dtype)
        close(gb, gb_ref, dtype, atol=1e-5 if dtype == np.float32 else 1e-12)
