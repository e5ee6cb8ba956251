"""kernels.conv with groups (the depthwise kernels among them) and asymmetric padding: the compiled
kernels against their NumPy twins (both builds), and the twins against PyTorch."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernels import conv as K
from tests.kernels.test_conv import assert_outputs_match

FUNCS = {"numba": (K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight),
         "numpy": (K.conv2d_forward_np, K.conv2d_backward_input_np, K.conv2d_backward_weight_np)}


@st.composite
def grouped_cases(draw, depthwise=None):
    """groups 1-4 (a depthwise one when each group has one input channel and groups > 1), any
    channel multiplier, stride, dilation, and padding as a pair or as (top, bottom, left, right)."""
    g = draw(st.integers(1, 4))
    one = draw(st.booleans()) if depthwise is None else depthwise
    cg = 1 if one else draw(st.integers(1, 3))
    og = draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    d = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    side = st.integers(0, 2)
    p = draw(st.one_of(st.tuples(side, side), st.tuples(side, side, side, side)))
    top, bottom, left, right = K.sides(p)
    # the padded input holds the dilated kernel (output size >= 1)
    h = draw(st.integers(max(1, d[0] * (kh - 1) + 1 - top - bottom), 9))
    w = draw(st.integers(max(1, d[1] * (kw - 1) + 1 - left - right), 9))
    return dict(n=draw(st.integers(1, 3)), c=g * cg, o=g * og, g=g, h=h, w=w, k=(kh, kw), s=s,
                p=p, d=d, bias=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


def _arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["o"], case["c"] // case["g"]) + case["k"]).astype(dtype)
    b = rng.standard_normal(case["o"]).astype(dtype) if case["bias"] else None
    oh, ow = K._out_hw(x.shape, w.shape, case["s"], case["p"], case["d"])
    g = rng.standard_normal((case["n"], case["o"], oh, ow)).astype(dtype)
    return x, w, b, g


def _all_grads(impl, case, x, w, b, g):
    fwd, bin_, bw = FUNCS[impl]
    s, p, d, groups = case["s"], case["p"], case["d"], case["g"]
    y = fwd(x, w, b, s, p, d, groups)
    dx = bin_(g, w, x.shape, s, p, d, groups)
    dw = np.full_like(w, 0.5)                    # accumulates into what is there
    db = np.full(w.shape[0], 0.25, w.dtype) if b is not None else None
    bw(g, x, s, p, d, dw, db, groups)
    return y, dx, dw, db


def _compare(case, dtype, rtol, atol):
    x, w, b, g = _arrays(case, dtype)
    got, want = (_all_grads(impl, case, x, w, b, g) for impl in ("numba", "numpy"))
    assert_outputs_match(got, want, dtype, rtol, atol)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=grouped_cases())
def test_kernels_match_twins_float64(build, case):
    _compare(case, np.float64, 1e-10, 1e-10)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=grouped_cases(depthwise=True))
def test_depthwise_kernels_match_twins_float64(build, case):
    _compare(case, np.float64, 1e-10, 1e-10)


@settings(max_examples=15, deadline=None)
@given(case=grouped_cases())
def test_kernels_match_twins_float32(case):
    # float32 on the default dispatch (serial at these sizes); both builds run in float64 above.
    _compare(case, np.float32, 1e-4, 1e-4)


@settings(max_examples=20, deadline=None)
@given(case=grouped_cases())
def test_twins_match_torch_float64(case):
    # The twins are the reference of the tests above: they are checked against PyTorch here.
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, g = _arrays(dict(case, bias=True), np.float64)
    top, bottom, left, right = K.sides(case["p"])
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(F.pad(tx, (left, right, top, bottom)), tw, tb, case["s"], 0, case["d"],
                  case["g"])
    ty.backward(torch.from_numpy(g))
    got = _all_grads("numpy", dict(case, bias=True), x, w, b, g)
    want = (ty, tx.grad, tw.grad + 0.5, tb.grad + 0.25)
    for name, a, e in zip(("y", "dx", "dw", "db"), got, want):
        np.testing.assert_allclose(a, e.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("case", [
    dict(n=1, c=2, o=2, g=2, h=1, w=1, k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1)),     # all sizes 1
    dict(n=2, c=3, o=6, g=3, h=3, w=3, k=(3, 3), s=(1, 1), p=(0, 0), d=(1, 1)),     # 1x1 output
    dict(n=2, c=4, o=8, g=4, h=5, w=6, k=(3, 3), s=(2, 2), p=(1, 1), d=(1, 1)),     # MobileNet's
    dict(n=1, c=2, o=2, g=2, h=3, w=3, k=(2, 2), s=(1, 1), p=(2, 2), d=(1, 1)),     # pad > kernel
    dict(n=2, c=2, o=4, g=2, h=4, w=5, k=(2, 4), s=(1, 1), p=(0, 1, 1, 2), d=(2, 1)),  # 'same'
    dict(n=2, c=8, o=8, g=2, h=6, w=6, k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1)),     # 4 per group
    dict(n=2, c=6, o=9, g=3, h=5, w=4, k=(3, 1), s=(1, 2), p=(1, 0), d=(1, 1)),
])
def test_edge_shapes(build, case):
    _compare(dict(case, bias=True, seed=1), np.float64, 1e-10, 1e-10)


@pytest.mark.parametrize("groups, cg", [(2, 3), (3, 1)])
def test_weight_gradient_any_sample_grouping(monkeypatch, groups, cg):
    # The stride-1 weight gradient stacks samples 1-4 at a time (the last stack may be short):
    # each grouping gives the twin's result, with groups and asymmetric padding too (the depthwise
    # kernel does not stack: it is checked with every stacking in place).
    p = (1, 0, 2, 1)
    case = dict(n=5, c=groups * cg, o=2 * groups, g=groups, h=5, w=4, k=(3, 2), s=(1, 1), p=p,
                d=(1, 2), bias=True, seed=3)
    x, w, b, g = _arrays(case, np.float64)
    want = _all_grads("numpy", case, x, w, b, g)
    for per_group in (1, 2, 4):
        monkeypatch.setattr(K, "_STACK_POSITIONS", per_group * (5 + 1) * (4 + 3))
        assert K._stack(x, p) == per_group
        got = _all_grads("numba", case, x, w, b, g)
        for a, e in zip(got[2:], want[2:]):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)


def test_depthwise_kernels_are_the_ones_that_run(monkeypatch):
    # groups == in_channels > 1 runs the depthwise kernels, whatever the channel multiplier;
    # groups == 1 with one input channel stays on the dense ones.
    called = []
    for name in ("_dw_forward", "_dw_backward_input", "_dw_wgrad"):
        piece = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _p=piece, _n=name: called.append(_n) or _p(*a))
    for c, o, g in ((3, 6, 3), (1, 4, 1)):
        case = dict(n=2, c=c, o=o, g=g, h=5, w=5, k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
                    bias=True, seed=0)
        _all_grads("numba", case, *_arrays(case, np.float64))
    assert called == ["_dw_forward", "_dw_backward_input", "_dw_wgrad"]


def test_same_bits_on_one_and_two_threads(monkeypatch):
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    for piece in (K._pad_into, K._upsample_pad_into, K._corr_s1, K._conv_general, K._wgrad_s1,
                  K._wgrad_general, K._dw_forward, K._dw_backward_input, K._dw_wgrad):
        monkeypatch.setattr(piece, "parallel_min", 0)
    cases = [dict(n=5, c=4, o=8, g=4, h=9, w=8, k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1)),
             dict(n=3, c=4, o=4, g=4, h=9, w=8, k=(3, 3), s=(2, 2), p=(1, 1), d=(1, 1)),
             dict(n=5, c=6, o=6, g=2, h=7, w=6, k=(3, 3), s=(1, 1), p=(0, 1, 1, 2), d=(1, 1))]
    before = numba.get_num_threads()
    for case in cases:
        case = dict(case, bias=True, seed=7)
        arrays = _arrays(case, np.float64)          # the builds the float64 tests compile
        try:
            runs = []
            for threads in (1, 2):
                numba.set_num_threads(threads)
                runs.append(_all_grads("numba", case, *arrays))
        finally:
            numba.set_num_threads(before)
        for a, e in zip(*runs):
            np.testing.assert_array_equal(a, e)
