"""sgd / rmsprop / adam / nadam step kernels against their NumPy twins, every option, several steps."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import optim as O

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


def run(step_fn, n, dtype, seed, nstate, steps, call):
    """Run ``steps`` steps of ``step_fn`` on fresh arrays; ``call(step_fn, p, g, states, t)``."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    states = [np.zeros(n, dtype) for _ in range(nstate)]
    for t in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        g_before = g.copy()
        call(step_fn, p, g, states, t)
        np.testing.assert_array_equal(g, g_before)       # the gradient is read-only
    return p, states


def compare(numba_fn, numpy_fn, n, dtype, seed, nstate, steps, call):
    p, states = run(numba_fn, n, dtype, seed, nstate, steps, call)
    p_ref, states_ref = run(numpy_fn, n, dtype, seed, nstate, steps, call)
    assert p.dtype == np.dtype(dtype)
    np.testing.assert_allclose(p, p_ref, **tol(dtype))
    for s, s_ref in zip(states, states_ref):
        np.testing.assert_allclose(s, s_ref, **tol(dtype))
    return p, states


common = dict(n=st.integers(1, 70), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
              steps=st.integers(1, 4), weight_decay=st.sampled_from([0.0, 0.01, 0.3]))


@given(momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.3]),
       nesterov=st.booleans(), lr=st.sampled_from([1e-3, 0.1]), **common)
def test_sgd_step_matches_twin(build, numba_ops, numpy_ops, momentum, dampening, nesterov, lr, n, dtype,
                               seed, steps, weight_decay):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False

    def call(fn, p, g, states, t):
        buf = states[0] if momentum else p[:0]
        fn(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, t == 1)

    p, states = compare(numba_ops.sgd_step, numpy_ops.sgd_step, n, dtype, seed, 1, steps, call)
    if not momentum:
        assert np.all(states[0] == 0)


@given(alpha=st.sampled_from([0.9, 0.99]), eps=st.sampled_from([1e-8, 1e-3]),
       momentum=st.sampled_from([0.0, 0.7]), centered=st.booleans(), lr=st.sampled_from([1e-3, 0.1]),
       **common)
def test_rmsprop_step_matches_twin(build, numba_ops, numpy_ops, alpha, eps, momentum, centered, lr, n,
                                   dtype, seed, steps, weight_decay):
    def call(fn, p, g, states, t):
        sq, gavg, buf = states
        fn(p, g, sq, gavg if centered else p[:0], buf if momentum else p[:0], lr, alpha, eps,
           weight_decay, momentum, centered)

    compare(numba_ops.rmsprop_step, numpy_ops.rmsprop_step, n, dtype, seed, 3, steps, call)


@given(beta1=st.sampled_from([0.0, 0.9]), beta2=st.sampled_from([0.9, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), amsgrad=st.booleans(), lr=st.sampled_from([1e-3, 0.1]),
       **common)
def test_adam_step_matches_twin(build, numba_ops, numpy_ops, beta1, beta2, eps, amsgrad, lr, n, dtype,
                                seed, steps, weight_decay):
    def call(fn, p, g, states, t):
        m, v, vmax = states
        fn(p, g, m, v, vmax if amsgrad else p[:0], lr, beta1, beta2, eps, weight_decay, t, amsgrad)

    p, (m, v, vmax) = compare(numba_ops.adam_step, numpy_ops.adam_step, n, dtype, seed, 3, steps, call)
    if amsgrad:
        assert np.all(vmax >= v)


@given(beta1=st.sampled_from([0.9, 0.5]), beta2=st.sampled_from([0.9, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), momentum_decay=st.sampled_from([0.0, 4e-3, 0.5]),
       lr=st.sampled_from([2e-3, 0.1]), **common)
def test_nadam_step_matches_twin(build, numba_ops, numpy_ops, beta1, beta2, eps, momentum_decay, lr, n,
                                 dtype, seed, steps, weight_decay):
    def call(fn, p, g, states, t):
        # The schedule scalars, as the NAdam class computes them (independently written here).
        prod = 1.0
        for s in range(1, t + 1):
            mu = beta1 * (1 - 0.5 * 0.96 ** (s * momentum_decay))
            prod *= mu
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        coef_g = lr * (1 - mu) / (1 - prod)
        coef_m = lr * mu_next / (1 - prod * mu_next)
        m, v = states
        fn(p, g, m, v, beta1, beta2, eps, weight_decay, 1 - beta2 ** t, coef_g, coef_m)

    compare(numba_ops.nadam_step, numpy_ops.nadam_step, n, dtype, seed, 2, steps, call)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_first_step_by_hand(build, numba_ops, dtype):
    """One Adam step from zero state moves every parameter by -lr * sign(g) (up to eps)."""
    p = np.array([1.0, -2.0, 3.0], dtype)
    g = np.array([0.5, -4.0, 1e-3], dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    numba_ops.adam_step(p, g, m, v, p[:0], 0.1, 0.9, 0.999, 1e-12, 0.0, 1, False)
    np.testing.assert_allclose(p, [0.9, -1.9, 2.9], rtol=1e-6)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-6)
    np.testing.assert_allclose(v, 0.001 * g.astype(np.float64) ** 2, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_nesterov_by_hand(build, numba_ops, dtype):
    p = np.array([1.0, 2.0], dtype)
    buf = np.zeros_like(p)
    g = np.array([1.0, -1.0], dtype)
    numba_ops.sgd_step(p, g, buf, 0.1, 0.9, 0.0, 0.0, True, True)       # b = g; d = g + 0.9 g
    np.testing.assert_allclose(p, [1 - 0.19, 2 + 0.19], rtol=1e-6)
    numba_ops.sgd_step(p, g, buf, 0.1, 0.9, 0.0, 0.0, True, False)      # b = 1.9 g; d = g + 1.71 g
    np.testing.assert_allclose(p, [1 - 0.19 - 0.271, 2 + 0.19 + 0.271], rtol=1e-6)
    np.testing.assert_allclose(buf, [1.9, -1.9], rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd_step", "rmsprop_step", "adam_step", "nadam_step"])
@pytest.mark.parametrize("which", ["serial", "parallel"])
def test_optim_kernels_each_build_directly(name, which, numpy_ops):
    """The registered dispatchers' ``.serial`` / ``.parallel`` builds called directly, float32."""
    disp = getattr(O, name)
    fn = getattr(disp, which)
    rng = np.random.default_rng(3)
    n = 101
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    args = {
        "sgd_step": lambda s: (s[0], 0.1, 0.9, 0.1, 0.01, False, False),
        "rmsprop_step": lambda s: (s[0], s[1], s[2], 0.01, 0.99, 1e-8, 0.01, 0.9, True),
        "adam_step": lambda s: (s[0], s[1], s[2], 0.01, 0.9, 0.999, 1e-8, 0.01, 3, True),
        "nadam_step": lambda s: (s[0], s[1], 0.9, 0.999, 1e-8, 0.01, 1 - 0.999 ** 3, 1e-3, 2e-3),
    }[name]
    p, p_ref = p0.copy(), p0.copy()
    s = [np.full(n, 0.5, np.float32) for _ in range(3)]
    s_ref = [a.copy() for a in s]
    fn(p, g, *args(s))
    getattr(numpy_ops, name)(p_ref, g, *args(s_ref))
    np.testing.assert_allclose(p, p_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(s, s_ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(p, p0)
    assert math.isfinite(float(p.sum()))
