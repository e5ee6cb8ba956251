"""The kernel registry: identical names on both backends, serial/parallel dispatch by size."""
import numba
import numpy as np
import pytest

import kernels
from kernels import _registry, activations, losses, softmax
from tests.conftest import compiled_dispatchers, forced_build

# Every op the foundation issue asks for, on both backends.
REQUIRED = {
    "activation_forward", "activation_backward", "bias_act_forward", "act_bias_backward",
    "linear_forward", "linear_backward",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_probs_forward",
    "mse_forward", "bce_forward", "bce_logits_forward", "nll_forward",
    "sgd_step", "rmsprop_step", "adam_step", "nadam_step",
}


def _public(ns):
    return sorted(n for n in dir(ns) if not n.startswith("_"))


def test_both_backends_register_identical_names():
    numba_ns, numpy_ns = kernels.backend("numba"), kernels.backend("numpy")
    assert _public(numba_ns) == _public(numpy_ns) == kernels.names()
    assert REQUIRED <= set(kernels.names())
    for name in kernels.names():
        assert callable(getattr(numba_ns, name)) and callable(getattr(numpy_ns, name))
        # The two backends really are different implementations.
        assert getattr(numba_ns, name) is not getattr(numpy_ns, name), name


def test_numba_backend_holds_the_compiled_dispatchers():
    ns = kernels.backend("numba")
    for name in ("softmax_forward", "log_softmax_backward", "sgd_step", "adam_step", "nadam_step",
                 "rmsprop_step"):
        disp = getattr(ns, name)
        assert hasattr(disp, "serial") and hasattr(disp, "parallel"), name


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="backend"):
        kernels.backend("cuda")


def test_registering_a_name_twice_raises_and_keeps_the_first():
    before = kernels.backend("numba").softmax_forward
    with pytest.raises(RuntimeError, match="softmax_forward"):
        _registry.register("softmax_forward", lambda x: x, lambda x: x)
    assert kernels.backend("numba").softmax_forward is before
    assert _registry._IMPLS["numba"]["softmax_forward"] is before


def test_build_fixture_reaches_the_private_helpers():
    names = {n for n, _ in compiled_dispatchers()}
    codes = sorted(activations.NAMES)
    assert {f"activations.{k}[{c}]" for k in ("_act_flat", "_act_grad_flat", "_bias_act",
                                              "_act_bias_backward") for c in codes} <= names
    kinds = (softmax.LABELS, softmax.SMOOTHED, softmax.PROBS)
    assert {f"softmax._ce_rows[{k}]" for k in kinds} <= names
    for required in ("softmax.softmax_forward", "softmax.log_softmax_forward",
                     "losses._pointwise", "optim.sgd_step", "optim.rmsprop_step",
                     "optim.adam_step", "optim.nadam_step"):
        assert required in names


def test_forced_build_restores_thresholds():
    before = {n: d.parallel_min for n, d in compiled_dispatchers()}
    with pytest.raises(KeyError):
        with forced_build("parallel"):
            assert all(d.parallel_min == 0 for _, d in compiled_dispatchers())
            raise KeyError("boom")
    assert {n: d.parallel_min for n, d in compiled_dispatchers()} == before


# A tiny kernel of our own, so the dispatch rule is observable through each build's signatures.
@_registry.compiled(parallel_min=8)
def _double_it(x, out):
    for i in numba.prange(x.size):
        out[i] = 2 * x[i]


def test_dispatch_picks_serial_below_and_parallel_at_threshold():
    small = np.arange(7, dtype=np.int16)     # a signature no other test uses
    out = np.empty_like(small)
    _double_it(small, out)
    np.testing.assert_array_equal(out, 2 * small)
    assert len(_double_it.serial.signatures) == 1
    assert len(_double_it.parallel.signatures) == 0

    big = np.arange(8, dtype=np.int16)
    out = np.empty_like(big)
    _double_it(big, out)
    np.testing.assert_array_equal(out, 2 * big)
    assert len(_double_it.parallel.signatures) == 1

    # None: always serial, whatever the size.
    _double_it.parallel_min = None
    try:
        huge = np.arange(100, dtype=np.int16)
        out = np.empty_like(huge)
        _double_it.serial(huge, np.empty_like(huge))
        _double_it(huge, out)
        np.testing.assert_array_equal(out, 2 * huge)
    finally:
        _double_it.parallel_min = 8


def test_serial_and_parallel_builds_are_distinct_compilations():
    relu = activations._act_flat[activations.RELU]
    assert relu.serial is not relu.parallel
    # Distinct cache names for the two builds (Numba's cache index ignores compile options).
    serial_name = relu.serial.py_func.__qualname__
    parallel_name = relu.parallel.py_func.__qualname__
    assert "__serial" in serial_name and "__parallel" in parallel_name
    assert serial_name.split("__")[-1] == parallel_name.split("__")[-1].replace("parallel", "serial")
    assert relu.parallel.targetoptions.get("parallel") is True
    assert not relu.serial.targetoptions.get("parallel")


def test_bound_builds_are_named_apart_and_see_their_binding():
    # One source, one build per activation code: each under its own cache name, with ACT bound.
    builds = activations._act_flat
    names = {b.serial.py_func.__qualname__ for b in builds.values()}
    assert len(names) == len(builds)
    for act, b in builds.items():
        assert b.serial.py_func.__globals__["ACT"] == act == b.parallel.py_func.__globals__["ACT"]
        assert activations.NAMES[act] in b.serial.py_func.__qualname__
    assert activations.ACT is None                     # the module's own globals are untouched
    with pytest.raises(ValueError, match="together"):
        _registry.compiled(bind={"ACT": 1})


def test_build_fixture_really_runs_the_parallel_build(build):
    x = np.linspace(-3, 3, 37)
    out = np.empty_like(x)
    relu = activations._act_flat[activations.RELU]
    relu(x, out, *activations.NO_PARAMS)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    disp = relu.parallel if build == "parallel" else relu.serial
    assert any(sig[0] == numba.typeof(x) for sig in disp.signatures)


@pytest.mark.parametrize("kind", [losses.MSE, losses.BCE, losses.BCE_LOGITS])
def test_loss_sum_does_not_depend_on_thread_count(kind):
    rng = np.random.default_rng(5)
    n = 3 * losses.CHUNK + 17
    p = rng.uniform(0.01, 0.99, n)
    t = rng.uniform(0, 1, n)
    results = []
    saved = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            partial = np.zeros((n + losses.CHUNK - 1) // losses.CHUNK)
            g = np.empty_like(p)
            none = np.empty(0)
            losses._pointwise.parallel(p, t, kind, 0.0, 1.0, True, g, partial, none, none, none)
            results.append((partial.sum(), g.copy()))
    finally:
        numba.set_num_threads(saved)
    for loss, g in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(g, results[0][1])


def test_softmax_rows_do_not_depend_on_thread_count():
    x = np.random.default_rng(1).standard_normal((33, 10))
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = softmax.softmax_forward.parallel(x)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = softmax.softmax_forward.parallel(x)
    finally:
        numba.set_num_threads(saved)
    np.testing.assert_array_equal(one, many)


def _mul_add(a, b, c, out):
    for i in numba.prange(a.size):
        out[i] = a[i] * b[i] + c[i]


_mul_add_plain = _registry.compiled(parallel_min=None)(_mul_add)
_mul_add_fma = _registry.compiled(parallel_min=None, fastmath=("contract",))(_mul_add)


def test_contract_is_opt_in_and_named_apart():
    # x*x = 1 + 2^-11 + 2^-24 needs 25 bits: rounded to float32 it loses 2^-24, which a fused
    # multiply-add keeps. Without contract= the product is always rounded (every other kernel's
    # results stay as they were); with it the sum may be fused (it is wherever the CPU has FMA).
    x = np.full(4, 1 + 2.0 ** -12, np.float32)
    c = np.full(4, -(1 + 2.0 ** -11), np.float32)
    plain, fused = np.empty_like(x), np.empty_like(x)
    _mul_add_plain(x, x, c, plain)
    _mul_add_fma(x, x, c, fused)
    np.testing.assert_array_equal(plain, 0)
    assert set(fused.tolist()) <= {0.0, 2.0 ** -24}
    assert _mul_add_plain.serial.py_func.__qualname__ != _mul_add_fma.serial.py_func.__qualname__


def _dot_and_nans(a, b):
    total, nans = a.dtype.type(0), 0
    for i in range(a.size):
        total += a[i] * b[i]
        nans += np.isnan(a[i])
    return total, nans


_dot_plain = _registry.compiled(parallel_min=None)(_dot_and_nans)
_dot_reassoc = _registry.compiled(parallel_min=None, fastmath=("contract", "reassoc"))(_dot_and_nans)


def test_reassoc_sums_in_another_order_but_keeps_nan_checks():
    # 2^24 + 1 + 1 + ... in float32: summed in order every 1 is lost; running sums (what reassoc
    # lets the vectoriser keep) add some of them up before they meet 2^24.
    a = np.ones(1024, np.float32)
    a[0] = 2.0 ** 24
    ones = np.ones_like(a)
    assert _dot_plain(a, ones)[0] == 2.0 ** 24
    total, nans = _dot_reassoc(a, ones)
    assert 2.0 ** 24 < total <= 2.0 ** 24 + 1023 and nans == 0
    a[5] = np.nan
    total, nans = _dot_reassoc(a, ones)
    assert np.isnan(total) and nans == 1      # np.isnan still works: no "nnan" flag
    assert len({f.serial.py_func.__qualname__ for f in (_dot_plain, _dot_reassoc, _mul_add_fma)}) == 3


def test_only_nan_safe_fastmath_flags():
    with pytest.raises(ValueError, match="fastmath flags must be among"):
        _registry.compiled(fastmath=("nnan",))(_dot_and_nans)
