"""kernels.pool: compiled max/avg pooling against the NumPy twins (both builds) and PyTorch."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernels import pool as P

@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ties = draw(st.booleans())        # small integers: many tied maxima
    return dict(shape=(n, c, h, w), k=(kh, kw), s=(sh, sw), p=(ph, pw), ties=ties,
                seed=draw(st.integers(0, 2**31)))


def _arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = (rng.integers(-2, 3, case["shape"]) if case["ties"] else rng.standard_normal(case["shape"]))
    x = x.astype(dtype)
    n, c, h, w = case["shape"]
    oh = P.out_size(h, case["k"][0], case["s"][0], case["p"][0])
    ow = P.out_size(w, case["k"][1], case["s"][1], case["p"][1])
    return x, rng.standard_normal((n, c, oh, ow)).astype(dtype)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=pool_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_kernels_match_twins(build, case, dtype):
    x, g = _arrays(case, dtype)
    k, s, p = case["k"], case["s"], case["p"]
    y, idx = P.maxpool2d_forward(x, k, s, p)
    y0, idx0 = P.maxpool2d_forward_np(x, k, s, p)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(idx, idx0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(P.maxpool2d_backward(g, idx, x.shape),
                               P.maxpool2d_backward_np(g, idx, x.shape), rtol=tol, atol=tol)
    a = P.avgpool2d_forward(x, k, s, p)
    assert a.dtype == dtype
    np.testing.assert_allclose(a, P.avgpool2d_forward_np(x, k, s, p), rtol=tol, atol=tol)
    np.testing.assert_allclose(P.avgpool2d_backward(g, x.shape, k, s, p),
                               P.avgpool2d_backward_np(g, x.shape, k, s, p), rtol=tol, atol=tol)


def test_overlapping_windows_add_into_the_shared_maximum(build):
    # stride 1 < kernel 3: the centre is the maximum of all 9 windows that hold it
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    y, idx = P.maxpool2d_forward(x, (3, 3), (1, 1), (0, 0))
    assert (idx == 12).all()
    dx = P.maxpool2d_backward(np.ones_like(y), idx, x.shape)
    assert dx[0, 0, 2, 2] == 9 and dx.sum() == 9


def test_parity_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    for shape, k, s, p in [((4, 16, 28, 28), (2, 2), (2, 2), (0, 0)),
                           ((2, 3, 9, 8), (3, 3), (1, 1), (1, 1)),
                           ((2, 2, 7, 9), (3, 2), (2, 1), (1, 1)),
                           ((1, 2, 5, 5), (4, 4), (3, 3), (2, 2))]:
        x = rng.integers(-3, 4, shape).astype(np.float32)    # ties: torch keeps the first maximum
        tx = torch.tensor(x, requires_grad=True)
        ty, ti = F.max_pool2d(tx, k, s, p, return_indices=True)
        g = rng.standard_normal(ty.shape).astype(np.float32)
        ty.backward(torch.from_numpy(g))
        y, idx = P.maxpool2d_forward(x, k, s, p)
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
        np.testing.assert_allclose(P.maxpool2d_backward(g, idx, x.shape), tx.grad.numpy(),
                                   atol=1e-6)
        ta = torch.tensor(x, requires_grad=True)
        ya = F.avg_pool2d(ta, k, s, p)
        ya.backward(torch.from_numpy(g))
        np.testing.assert_allclose(P.avgpool2d_forward(x, k, s, p), ya.detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(P.avgpool2d_backward(g, x.shape, k, s, p), ta.grad.numpy(),
                                   atol=1e-6)


def test_nan_and_all_minus_inf_windows_follow_torch():
    torch = pytest.importorskip("torch")
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    x[0, 0, 1, 0] = x[0, 0, 1, 1] = np.nan
    ty, ti = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 1, 1, return_indices=True)
    for fwd in (P.maxpool2d_forward, P.maxpool2d_forward_np):
        y, idx = fwd(x, (3, 3), (1, 1), (1, 1))
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, ti.numpy())


@pytest.mark.parametrize("k, s, p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))])
def test_nan_and_inf_in_the_fast_and_general_paths(build, k, s, p):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    x[0, 0, 0, 1] = x[0, 0, 1, 1] = np.nan          # two NaNs in one window: the last one wins
    x[0, 1, 2, 2], x[0, 1, 3, 3] = np.inf, -np.inf   # inf - inf sums to NaN: rescanned, inf wins
    x[1, 0, 4:6, 4:6] = -np.inf                      # an all -inf window
    ty, ti = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, return_indices=True)
    for fwd in (P.maxpool2d_forward, P.maxpool2d_forward_np):
        y, idx = fwd(x, k, s, p)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
