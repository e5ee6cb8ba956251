"""clip_grad_norm_ and clip_grad_value_ against torch.nn.utils on the same gradients, on both
backends; None gradients, mixed dtypes, non-finite norms and bad arguments."""
import math

import numpy as np
import pytest

import fastlayers as fl
from fastlayers.runtime import import_torch

torch = import_torch()
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
SHAPES = [(5, 4), (4,), (3, 2, 2), (1,)]


def _pair(dtype=np.float32, scale=1.0, seed=0):
    r = np.random.default_rng(seed)
    grads = [(r.standard_normal(s) * scale).astype(dtype) for s in SHAPES]
    ours = []
    for g in grads:
        p = fl.Parameter(np.zeros_like(g))
        p.grad = g.copy()
        ours.append(p)
    theirs = []
    for g in grads:
        t = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        theirs.append(t)
    return ours, theirs


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf, 0.5])
@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e3])
def test_clip_grad_norm_matches_torch(backend_name, dtype, norm_type, max_norm):
    ours, theirs = _pair(dtype)
    total = fl.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert total == pytest.approx(float(ttotal), rel=rtol)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=rtol * 10, atol=1e-7)


@needs_torch
@pytest.mark.parametrize("clip", [0.0, 0.3, 5.0])
def test_clip_grad_value_matches_torch(backend_name, clip):
    ours, theirs = _pair(np.float32)
    ours[0].grad[0, 0] = np.nan
    theirs[0].grad[0, 0] = float("nan")
    fl.clip_grad_value_(ours, clip)
    torch.nn.utils.clip_grad_value_(theirs, clip)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())


def test_none_grads_and_mixed_dtypes():
    a = fl.Parameter(np.zeros(3, np.float32))
    b = fl.Parameter(np.zeros(4, np.float64))
    c = fl.Parameter(np.zeros(2, np.float32))
    a.grad[...] = [3.0, 0.0, 0.0]
    b.grad[...] = [0.0, 4.0, 0.0, 0.0]
    c.grad = None
    total = fl.clip_grad_norm_([a, b, c], max_norm=1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad, [3 / 5, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(b.grad, [0, 4 / 5, 0, 0], rtol=1e-6)
    assert c.grad is None and b.grad.dtype == np.float64
    assert fl.clip_grad_norm_([c], 1.0) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_norm(bad):
    p = fl.Parameter(np.zeros(3, np.float32))
    p.grad[...] = [1.0, bad, 2.0]
    before = p.grad.copy()
    with pytest.raises(RuntimeError, match="non-finite"):
        fl.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad, before)       # nothing changed
    total = fl.clip_grad_norm_([p], 1.0)
    assert not math.isfinite(total)


@pytest.mark.parametrize("call,exc,match", [
    (lambda ps: fl.clip_grad_norm_(ps, -1.0), ValueError, "max_norm"),
    (lambda ps: fl.clip_grad_norm_(ps, "1"), TypeError, "max_norm"),
    (lambda ps: fl.clip_grad_norm_(ps, 1.0, norm_type=0), ValueError, "norm_type"),
    (lambda ps: fl.clip_grad_norm_(ps, 1.0, norm_type="fro"), ValueError, "norm_type"),
    (lambda ps: fl.clip_grad_norm_(ps, 1.0, error_if_nonfinite=1), TypeError, "error_if_nonfinite"),
    (lambda ps: fl.clip_grad_norm_(ps + [np.zeros(3)], 1.0), TypeError, "Parameter"),
    (lambda ps: fl.clip_grad_value_(ps, -0.5), ValueError, "clip_value"),
    (lambda ps: fl.clip_grad_value_(ps, float("nan")), TypeError, "clip_value"),
])
def test_bad_arguments_change_nothing(call, exc, match):
    ps = [fl.Parameter(np.zeros(3, np.float32))]
    ps[0].grad[...] = [5.0, -5.0, 1.0]
    with pytest.raises(exc, match=match):
        call(ps)
    np.testing.assert_array_equal(ps[0].grad, [5.0, -5.0, 1.0])


def test_kernels_match_their_twins(numba_ops, numpy_ops):
    r = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        a = tuple(r.standard_normal(n).astype(dtype) for n in (1000, 7, 1))
        b = tuple(x.copy() for x in a)
        for p in (2.0, 1.0, 3.0, math.inf):
            assert numba_ops.grad_norm(a, p) == pytest.approx(numpy_ops.grad_norm(b, p), rel=1e-12)
        numba_ops.scale(a, 0.3)
        numpy_ops.scale(b, 0.3)
        numba_ops.clip_value(a, 0.5)
        numpy_ops.clip_value(b, 0.5)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
