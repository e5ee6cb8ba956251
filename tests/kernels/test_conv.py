"""kernels.conv: the compiled convolution against its NumPy twin (both builds), and PyTorch."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernels import conv as K

# Every compiled piece the conv ops dispatch to (tests.conftest's ``build`` fixture forces the
# build of these and every other kernel).
_PIECES = (K._pad_into, K._upsample_pad_into, K._corr_s1, K._conv_general, K._wgrad_s1,
           K._wgrad_general)


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    # the input is at least as large as the dilated kernel once padded (output size >= 1)
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    return dict(n=n, c=c, o=o, h=h, w=w, k=(kh, kw), s=(sh, sw), p=(ph, pw), d=(dh, dw),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


def _arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["o"], case["c"]) + case["k"]).astype(dtype)
    b = rng.standard_normal(case["o"]).astype(dtype) if case["bias"] else None
    oh = K.out_size(case["h"], case["k"][0], case["s"][0], case["p"][0], case["d"][0])
    ow = K.out_size(case["w"], case["k"][1], case["s"][1], case["p"][1], case["d"][1])
    g = rng.standard_normal((case["n"], case["o"], oh, ow)).astype(dtype)
    return x, w, b, g


def _all_grads(fwd, bin_, bw, x, w, b, g, s, p, d):
    y = fwd(x, w, b, s, p, d)
    dx = bin_(g, w, x.shape, s, p, d)
    dw = np.full_like(w, 0.5)                    # accumulates into what is there
    db = np.full(w.shape[0], 0.25, w.dtype) if b is not None else None
    bw(g, x, s, p, d, dw, db)
    return y, dx, dw, db


def assert_outputs_match(got, want, dtype, rtol, atol):
    """The (y, dx, dw, db) of the compiled kernels against the twins' (db None without a bias)."""
    for name, a, e in zip(("y", "dx", "dw", "db"), got, want):
        if e is None:
            assert a is None
            continue
        assert a.dtype == dtype and a.shape == e.shape, name
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=name)


def _compare(case, dtype, rtol, atol):
    x, w, b, g = _arrays(case, dtype)
    args = (x, w, b, g, case["s"], case["p"], case["d"])
    got = _all_grads(K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight, *args)
    want = _all_grads(K.conv2d_forward_np, K.conv2d_backward_input_np, K.conv2d_backward_weight_np,
                      *args)
    assert_outputs_match(got, want, dtype, rtol, atol)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_cases())
def test_kernels_match_twins_float64(build, case):
    _compare(case, np.float64, 1e-10, 1e-10)


@settings(max_examples=15, deadline=None)
@given(case=conv_cases())
def test_kernels_match_twins_float32(case):
    # float32 on the default dispatch (serial at these sizes): both builds are exercised in float64,
    # and forcing them here too would double the cold-compile time of this file.
    _compare(case, np.float32, 1e-4, 1e-4)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_cases(), n=st.integers(1, 7), per_group=st.integers(1, 4))
def test_weight_gradient_any_sample_grouping(build, monkeypatch, case, n, per_group):
    # The stride-1 weight gradient stacks samples per_group at a time (the last group may be short,
    # after full ones): each grouping gives the twin's result.
    case = dict(case, n=n, s=(1, 1))
    x, w, b, g = _arrays(case, np.float64)
    (ph, pw), (h, wd) = case["p"], x.shape[2:]
    monkeypatch.setattr(K, "_STACK_POSITIONS", per_group * (h + 2 * ph) * (wd + 2 * pw))
    assert K._stack(x, case["p"]) == min(n, per_group)
    got = np.full_like(w, 0.5), np.full(w.shape[0], 0.25)
    want = np.full_like(w, 0.5), np.full(w.shape[0], 0.25)
    K.conv2d_backward_weight(g, x, (1, 1), case["p"], case["d"], *got)
    K.conv2d_backward_weight_np(g, x, (1, 1), case["p"], case["d"], *want)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [
    dict(n=1, c=1, o=1, h=1, w=1, k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1)),     # all sizes 1
    dict(n=1, c=3, o=5, h=4, w=6, k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1)),     # 1x1 kernel
    dict(n=2, c=2, o=3, h=3, w=3, k=(3, 3), s=(1, 1), p=(0, 0), d=(1, 1)),     # 1x1 output
    dict(n=2, c=1, o=16, h=28, w=28, k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1)),  # first MNIST conv
    dict(n=2, c=4, o=7, h=9, w=8, k=(3, 3), s=(2, 2), p=(1, 1), d=(2, 2)),
    dict(n=1, c=2, o=2, h=3, w=3, k=(2, 2), s=(1, 1), p=(2, 2), d=(1, 1)),     # padding > kernel
])
def test_edge_shapes(build, case):
    _compare(dict(case, bias=True, seed=1), np.float64, 1e-10, 1e-10)


def test_parity_with_torch_float32():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    for (n, c, o, h, w, k, s, p, d) in [(4, 16, 32, 14, 14, (3, 3), (1, 1), (1, 1), (1, 1)),
                                        (3, 1, 16, 28, 28, (3, 3), (1, 1), (1, 1), (1, 1)),
                                        (2, 3, 5, 11, 9, (3, 2), (2, 3), (1, 2), (2, 1)),
                                        (2, 2, 4, 8, 8, (5, 5), (1, 1), (2, 2), (1, 1))]:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((o, c) + k).astype(np.float32)
        b = rng.standard_normal(o).astype(np.float32)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, wt, b))
        ty = F.conv2d(tx, tw, tb, s, p, d)
        g = rng.standard_normal(ty.shape).astype(np.float32)
        ty.backward(torch.from_numpy(g))
        y = K.conv2d_forward(x, wt, b, s, p, d)
        dx = K.conv2d_backward_input(g, wt, x.shape, s, p, d)
        dw, db = np.zeros_like(wt), np.zeros_like(b)
        K.conv2d_backward_weight(g, x, s, p, d, dw, db)
        for a, e in ((y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
            e = e.detach().numpy()
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


def test_same_bits_on_one_and_two_threads(monkeypatch):
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    for piece in _PIECES:
        monkeypatch.setattr(piece, "parallel_min", 0)
    case = dict(n=5, c=3, o=6, h=9, w=8, k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), bias=True, seed=7)
    x, w, b, g = _arrays(case, np.float64)
    args = (x, w, b, g, case["s"], case["p"], case["d"])
    before = numba.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            runs.append(_all_grads(K.conv2d_forward, K.conv2d_backward_input,
                                   K.conv2d_backward_weight, *args))
    finally:
        numba.set_num_threads(before)
    for a, e in zip(*runs):
        np.testing.assert_array_equal(a, e)
