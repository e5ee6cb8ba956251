"""linear_forward / linear_backward against their NumPy twins, with and without bias, for every
activation (the parallel build in float32 only: each activation code is a build of its own)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import activations as A
from tests.kernels.test_activations import build_dtype, reference_derivative, reference_forward

ACTS = sorted(A.NAMES)
DTYPES = [np.float32, np.float64]
PARAMS = {A.LEAKY_RELU: (0.05, 0.0), A.HARDTANH: (-0.5, 0.8), A.ELU: (0.7, 0.0),
          A.SOFTPLUS: (2.0, 3.0)}


def problem(n, k, m, dtype, seed, bias):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, k)).astype(dtype)
    w = (rng.standard_normal((m, k)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype) if bias else None
    return rng, x, w, b


def loose(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ACTS)
@given(n=st.integers(1, 13), k=st.integers(1, 17), m=st.integers(1, 19),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_linear_forward_matches_twin(build, numba_ops, numpy_ops, act, bias, n, k, m, dtype, seed):
    dtype = build_dtype(build, dtype)
    _, x, w, b = problem(n, k, m, dtype, seed, bias)
    params = PARAMS.get(act, A.NO_PARAMS)
    y, saved = numba_ops.linear_forward(x, w, b, act, params)
    assert y.shape == (n, m) and y.dtype == np.dtype(dtype)
    y_ref, saved_ref = numpy_ops.linear_forward(x, w, b, act, params)
    np.testing.assert_allclose(y, y_ref, **loose(dtype))
    # The saved array is the output, or the pre-activation where the backward reads the input.
    pre = x.astype(np.float64) @ w.astype(np.float64).T + (0 if b is None else b)
    if act in A.NEEDS_INPUT:
        assert saved is not y and saved.shape == y.shape
        np.testing.assert_allclose(saved, pre, **loose(dtype))
        np.testing.assert_allclose(saved_ref, pre, **loose(dtype))
    else:
        assert saved is y and saved_ref is y_ref
    # and against an independent float64 formula
    np.testing.assert_allclose(y, reference_forward(saved if act in A.NEEDS_INPUT else
                                                    pre.astype(dtype), act, params),
                               **loose(dtype))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ACTS)
@given(n=st.integers(1, 13), k=st.integers(1, 17), m=st.integers(1, 19),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16), need_dx=st.booleans())
def test_linear_backward_matches_twin(build, numba_ops, numpy_ops, act, bias, n, k, m, dtype, seed,
                                      need_dx):
    dtype = build_dtype(build, dtype)
    rng, x, w, b = problem(n, k, m, dtype, seed, bias)
    params = PARAMS.get(act, A.NO_PARAMS)
    y, saved = numpy_ops.linear_forward(x, w, b, act, params)
    grad = rng.standard_normal((n, m)).astype(dtype)
    # Gradients accumulate: start from non-zero dw/db.
    dw0 = rng.standard_normal((m, k)).astype(dtype)
    db0 = rng.standard_normal(m).astype(dtype) if bias else None
    dw, dw_ref = dw0.copy(), dw0.copy()
    db = None if db0 is None else db0.copy()
    db_ref = None if db0 is None else db0.copy()
    dx = numba_ops.linear_backward(grad, x, w, saved, act, params, dw, db, need_dx)
    dx_ref = numpy_ops.linear_backward(grad, x, w, saved, act, params, dw_ref, db_ref, need_dx)
    np.testing.assert_allclose(dw, dw_ref, **loose(dtype))
    if bias:
        np.testing.assert_allclose(db, db_ref, **loose(dtype))
    if need_dx:
        assert dx.shape == x.shape and dx.dtype == np.dtype(dtype)
        np.testing.assert_allclose(dx, dx_ref, **loose(dtype))
    else:
        assert dx is None and dx_ref is None
    # Independent reference for the accumulated weight gradient, from the pre-activation.
    pre = x.astype(np.float64) @ w.astype(np.float64).T + (0 if b is None else b)
    g64 = grad.astype(np.float64) * reference_derivative(pre, act, params)
    np.testing.assert_allclose(dw, dw0 + g64.T @ x.astype(np.float64), **loose(dtype))
    if bias:
        np.testing.assert_allclose(db, db0 + g64.sum(axis=0), **loose(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_writes_into_a_view_of_a_packed_buffer(numba_ops, dtype):
    """Optimizers re-home dw as a view into one flat buffer: the in-place BLAS update must land
    there, not in a copy."""
    rng, x, w, b = problem(6, 5, 4, dtype, 0, True)
    flat = np.zeros(4 * 5 + 4 + 3, dtype)
    dw = flat[3:23].reshape(4, 5)
    db = flat[23:27]
    y, saved = numba_ops.linear_forward(x, w, b, A.IDENTITY, A.NO_PARAMS)
    grad = rng.standard_normal(y.shape).astype(dtype)
    numba_ops.linear_backward(grad, x, w, saved, A.IDENTITY, A.NO_PARAMS, dw, db, True)
    np.testing.assert_allclose(flat[3:23].reshape(4, 5), grad.T @ x, **loose(dtype))
    np.testing.assert_allclose(flat[23:27], grad.sum(0), **loose(dtype))
    assert np.all(flat[:3] == 0)
