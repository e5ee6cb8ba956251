"""kernels/_vmath.py: exp, expm1, log, log1p, tanh, erf and sum64 against NumPy (erf: the standard
library's math.erf), measured in ulp.

Each function runs inside a compiled loop (the way the kernels call it, so the vectorised body and
the scalar remainder both run) over dense grids and the special values, in float32 and float64.
The float32 reference is the float64 result rounded to float32 (correctly rounded but for rare
double-rounding ties): NumPy's own float32 exp and log are up to 2 and 4 ulp from it.
"""
import math
import re

import numpy as np
import pytest
from numba import njit

from kernels import _vmath as V

DTYPES = [np.float32, np.float64]
# measured: 1 ulp in float32 (exp, log, log1p, tanh, erf) and 2 (expm1); 1 (exp, log, log1p) and
# 2 (tanh, expm1, erf) in float64
MAX_ULP = 2
FUNCS = {"exp": V.exp, "expm1": V.expm1, "log": V.log, "log1p": V.log1p, "tanh": V.tanh,
         "erf": V.erf}
# The float64 references: NumPy's, and the standard library's erf (NumPy has none).
REFERENCES = {name: getattr(np, name) for name in FUNCS if name != "erf"}
REFERENCES["erf"] = np.frompyfunc(math.erf, 1, 1)


def _compiled_loop(fn):
    @njit(error_model="numpy")
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])
    return apply


LOOPS = {name: _compiled_loop(fn) for name, fn in FUNCS.items()}


def run(name, x):
    out = np.empty_like(x)
    LOOPS[name](x, out)
    return out


def reference(name, x):
    with np.errstate(all="ignore"):
        return REFERENCES[name](x.astype(np.float64)).astype(np.float64).astype(x.dtype)


def ulp_distance(a, b):
    """How many representable numbers lie between a and b (0 where both are the same NaN/inf/value;
    +0 and -0 are one apart)."""
    itype = np.int32 if a.dtype == np.float32 else np.int64

    def ordered(v):  # float bits -> integers in the order of the floats
        bits = v.view(itype).astype(np.int64)
        return np.where(bits < 0, np.iinfo(itype).min - bits, bits)
    dist = np.abs(ordered(a) - ordered(b))
    return np.where(np.isnan(a) & np.isnan(b), 0, dist)


def grid(name, dtype):
    """A dense grid over the whole interesting domain, plus random points."""
    f32 = dtype == np.float32
    rng = np.random.default_rng(0)
    big = np.finfo(dtype).max
    if name in ("exp", "expm1"):
        lo, hi = (-105.0, 89.0) if f32 else (-746.0, 710.0)
        parts = [np.linspace(lo, hi, 1_000_003), np.linspace(-1, 1, 100_003),
                 rng.uniform(lo, hi, 100_000)]
        if name == "expm1":   # small arguments of both signs, and the cancelling n = +-1, +-2
            tiny = np.geomspace(1e-30, 1, 200_003)
            parts += [tiny, -tiny, np.linspace(-2, 2, 400_003), np.linspace(-40, -15, 100_003)]
    elif name == "erf":       # the branch point 1, the tails to where erf rounds to +-1, tiny ones
        tiny = np.geomspace(1e-30, 7, 300_003)
        parts = [np.linspace(-7, 7, 1_000_003), np.linspace(0.9, 1.1, 200_003), tiny, -tiny,
                 rng.uniform(-7, 7, 100_000)]
    elif name in ("log", "log1p"):
        tiny = float(np.finfo(dtype).smallest_subnormal)
        pos = np.geomspace(tiny, float(big) / 2, 1_000_003)     # (the maximum is in SPECIAL)
        parts = [pos, np.linspace(0.25, 4, 500_003), rng.uniform(0, 2, 100_000)]
        if name == "log1p":   # arguments down to -1, and tiny ones of both signs
            parts += [-pos[pos < 1], np.linspace(-1, 1, 500_003)]
    else:
        parts = [np.linspace(-20, 20, 1_000_003), np.geomspace(1e-30, 20, 200_003),
                 -np.geomspace(1e-30, 20, 200_003)]
    return np.concatenate(parts).astype(dtype)


SPECIAL = {
    "exp": {np.float32: [88.72283, 88.72284, -87.33654, -103.9720, -103.98, -1e30, 1e30, 1e-8],
            np.float64: [709.782712893384, 709.7827128933841, -708.3964185322641,
                         -745.1332191019411, -745.14, -1e300, 1e300, 1e-17]},
    "log": {np.float32: [1.0, 1.0000001, 0.99999994, 1e-45, 1.17549435e-38, 3.4028235e38, -1.0],
            np.float64: [1.0, 1.0000000000000002, 0.9999999999999999, 5e-324, 2.2250738585072014e-308,
                         1.7976931348623157e308, -1.0]},
    "log1p": {np.float32: [-1.0, -0.99999994, -1.5, 1e-30, -1e-30, 5.96e-8, 3.4028235e38],
              np.float64: [-1.0, -0.9999999999999999, -1.5, 1e-300, -1e-300, 1.1e-16,
                           1.7976931348623157e308]},
    "tanh": {np.float32: [0.625, np.nextafter(np.float32(0.625), np.float32(0)), 9.0, 1e-30, -1e-30],
             np.float64: [0.625, np.nextafter(0.625, 0.0), 19.1, 1e-300, -1e-300]},
    # expm1: the overflow threshold, the lower clamp, tiny arguments (subnormals included)
    "expm1": {np.float32: [88.72283, 88.72284, -18.0, -17.9, 1e-30, -1e-30, 1e-45, 1e-8],
              np.float64: [709.782712893384, 709.7827128933841, -38.0, -37.9, 1e-300, -1e-300,
                           5e-324, 1e-17]},
    # erf: the branch point, the clamps, subnormals
    "erf": {np.float32: [1.0, np.nextafter(np.float32(1), np.float32(0)), 4.0, -4.0, 3.9, 1e-45,
                         -1e-45, 1e-30],
            np.float64: [1.0, np.nextafter(1.0, 0.0), 6.0, -6.0, 5.9, 5e-324, -5e-324, 1e-300]},
}
EVERYWHERE = [0.0, -0.0, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCS))
def test_within_two_ulp_on_a_dense_grid(name, dtype):
    x = grid(name, dtype)
    got, want = run(name, x), reference(name, x)
    dist = ulp_distance(got, want)
    worst = int(dist.argmax())
    assert dist.max() <= MAX_ULP, (name, x[worst], got[worst], want[worst])
    assert got.dtype == x.dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCS))
def test_special_values_exactly(name, dtype):
    """0, -0, +-inf, NaN and each function's thresholds (overflow, underflow to subnormals and to 0,
    the smallest and largest arguments, the branch points) give NumPy's result, sign of zero
    included; the thresholds to within one ulp."""
    x = np.array(EVERYWHERE + SPECIAL[name][dtype], dtype)
    got, want = run(name, x), reference(name, x)
    k = len(EVERYWHERE)
    np.testing.assert_array_equal(got[:k], want[:k])
    signed = ~np.isnan(want[:k])                  # (NaN's sign bit is not specified)
    np.testing.assert_array_equal(np.signbit(got[:k][signed]), np.signbit(want[:k][signed]))
    assert ulp_distance(got[k:], want[k:]).max() <= 1, (x[k:], got[k:], want[k:])
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_overflow_and_underflow_boundaries(dtype):
    """Around the largest finite result, the smallest subnormal and the last nonzero result."""
    itype = np.int32 if dtype == np.float32 else np.int64
    for start in SPECIAL["exp"][dtype][:5]:
        x = (np.array(start, dtype).view(itype) + np.arange(-50, 51, dtype=itype)).view(dtype)
        got, want = run("exp", x), reference("exp", x)
        assert ulp_distance(got, want).max() <= 1
        np.testing.assert_array_equal(got == 0, want == 0)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_float64_matches_numpy_float64(dtype):
    """In float64 the reference is NumPy itself (its float64 exp/log are correctly rounded here or
    nearly); in float32, NumPy's float32 results stay within their own error of ours (erf, which
    NumPy lacks, is measured against math.erf only)."""
    numpy_own_error = {"exp": 2, "expm1": 1, "log": 4, "log1p": 1, "tanh": 1} \
        if dtype == np.float32 else dict.fromkeys(set(FUNCS) - {"erf"}, 0)
    for name in numpy_own_error:
        x = grid(name, dtype)[::7]
        with np.errstate(all="ignore"):
            want = getattr(np, name)(x)
        assert ulp_distance(run(name, x), want).max() <= MAX_ULP + numpy_own_error[name], name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 16, 23, 4096 + 5])
def test_sum64_is_the_float64_sum(dtype, n):
    a = np.random.default_rng(n).standard_normal(n).astype(dtype)
    got = njit(lambda a: V.sum64(a))(a)
    assert isinstance(got, float)
    exact = math.fsum(a.astype(np.float64))
    assert abs(got - exact) <= 1e-15 * n * max(np.abs(a).max(initial=0), 1)


@pytest.mark.parametrize("name", list(FUNCS))
def test_no_maths_library_calls(name):
    """The point of the module: a loop over these calls no libm function (an uncached build, so
    that its assembly can be inspected)."""
    loop = _compiled_loop(FUNCS[name])
    for dtype in DTYPES:
        x = np.ones(16, dtype)
        loop(x, np.empty_like(x))
    for sig in loop.signatures:
        asm = loop.inspect_asm(sig)
        symbols = set(re.findall(r"\$([A-Za-z_]\w*)", asm)) | set(re.findall(r"call\w*\s+([A-Za-z_]\w*)",
                                                                            asm))
        libm = {"exp", "expf", "log", "logf", "log1p", "log1pf", "tanh", "tanhf", "expm1", "expm1f",
                "erf", "erff", "erfc", "erfcf"}
        assert not symbols & libm, (sig, symbols & libm)
