"""kernels.pool's adaptive pooling: the compiled kernels against their NumPy twins (both builds),
and the twins against PyTorch (bins, ties, NaN and inf)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernels import pool as P

FUNCS = {"numba": (P.adaptive_avgpool2d_forward, P.adaptive_avgpool2d_backward,
                   P.adaptive_maxpool2d_forward, P.maxpool2d_backward),
         "numpy": (P.adaptive_avgpool2d_forward_np, P.adaptive_avgpool2d_backward_np,
                   P.adaptive_maxpool2d_forward_np, P.maxpool2d_backward_np)}


@st.composite
def adaptive_cases(draw):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    # output sizes up to beyond the input's (PyTorch's bins then repeat inputs), and the global 1x1
    global_pool = draw(st.booleans())
    oh = 1 if global_pool else draw(st.integers(1, 11))
    ow = 1 if global_pool else draw(st.integers(1, 11))
    return dict(shape=(draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w), out=(oh, ow),
                ties=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


def _arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    x = rng.integers(-2, 3, shape) if case["ties"] else rng.standard_normal(shape)  # ties: many
    g = rng.standard_normal(shape[:2] + case["out"])
    return x.astype(dtype), g.astype(dtype)


def _run(impl, x, g, out):
    avg, avg_back, mx, mx_back = FUNCS[impl]
    y, idx = mx(x, out)
    return avg(x, out), avg_back(g, x.shape), y, idx, mx_back(g, idx, x.shape)


def _compare(case, dtype):
    x, g = _arrays(case, dtype)
    got, want = _run("numba", x, g, case["out"]), _run("numpy", x, g, case["out"])
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for name, a, e in zip(("avg", "avg dx", "max", "idx", "max dx"), got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        if name in ("max", "idx"):
            np.testing.assert_array_equal(a, e, err_msg=name)
        else:
            np.testing.assert_allclose(a, e, err_msg=name, **tol)
    assert got[3].dtype == np.int64 and got[0].dtype == dtype


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=adaptive_cases())
def test_kernels_match_twins_float64(build, case):
    _compare(case, np.float64)


@settings(max_examples=20, deadline=None)
@given(case=adaptive_cases())
def test_kernels_match_twins_float32(case):
    # float32 on the default dispatch (serial at these sizes): both builds run in float64 above,
    # and forcing them here too would compile each kernel twice more.
    _compare(case, np.float32)


@settings(max_examples=25, deadline=None)
@given(case=adaptive_cases())
def test_twins_match_torch_float64(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, g = _arrays(case, np.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.adaptive_avg_pool2d(tx, case["out"])
    ty.backward(torch.from_numpy(g))
    tm = torch.tensor(x, requires_grad=True)
    tmy, ti = F.adaptive_max_pool2d(tm, case["out"], return_indices=True)
    tmy.backward(torch.from_numpy(g))
    avg, avg_dx, y, idx, max_dx = _run("numpy", x, g, case["out"])
    np.testing.assert_allclose(avg, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(avg_dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y, tmy.detach().numpy())
    np.testing.assert_array_equal(idx, ti.numpy())
    np.testing.assert_allclose(max_dx, tm.grad.numpy(), rtol=1e-12, atol=1e-12)


def _specials(dtype):
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 6)).astype(dtype)
    x[0, 0, 0, 1] = x[0, 0, 1, 1] = np.nan          # two NaNs in one bin: the last one wins
    x[0, 1, 2, 2], x[0, 1, 3, 3] = np.inf, -np.inf   # inf - inf sums to NaN: rescanned, inf wins
    x[1, 0, :4, :3] = -np.inf                        # all -inf bins: the first input
    x[1, 1, 5, :] = np.nan
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out", [(1, 1), (2, 2), (3, 4), (5, 6), (7, 6), (9, 4)])
def test_nan_and_inf_follow_torch(out, dtype):
    torch = pytest.importorskip("torch")
    x = _specials(dtype)
    ty, ti = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(x), out, return_indices=True)
    ta = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), out)
    for impl in ("numba", "numpy"):
        y, idx = FUNCS[impl][2](x, out)
        np.testing.assert_array_equal(y, ty.numpy(), err_msg=impl)
        np.testing.assert_array_equal(idx, ti.numpy(), err_msg=impl)
        with np.errstate(invalid="ignore"):                  # inf - inf in the twin's sums
            a = FUNCS[impl][0](x, out)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(ta.numpy()), err_msg=impl)
        np.testing.assert_allclose(a, ta.numpy(), rtol=1e-6, atol=1e-6, err_msg=impl)


@pytest.mark.parametrize("shape, out", [((2, 8, 28, 28), (1, 1)), ((2, 8, 14, 14), (7, 7)),
                                        ((2, 8, 13, 10), (4, 3)), ((3, 5, 6, 7), (6, 7))])
def test_parity_with_torch_float32(shape, out):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) + 3).astype(np.float32)      # off zero: sums do not cancel
    g = rng.standard_normal(shape[:2] + out).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.adaptive_avg_pool2d(tx, out)
    ty.backward(torch.from_numpy(g))
    tmy, ti = F.adaptive_max_pool2d(torch.from_numpy(x), out, return_indices=True)
    avg, avg_dx, y, idx, _ = _run("numba", x, g, out)
    for a, e in ((avg, ty), (avg_dx, tx.grad)):
        e = e.detach().numpy()
        assert np.abs(a - e).max() <= 1e-6 * np.abs(e).max()
    np.testing.assert_array_equal(y, tmy.numpy())
    np.testing.assert_array_equal(idx, ti.numpy())
