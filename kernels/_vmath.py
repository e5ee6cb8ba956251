"""exp, expm1, log, log1p, tanh and erf in arithmetic only, so that loops calling them vectorise.

Numba compiles ``np.exp`` and friends to calls into the C maths library (there is no SVML here): a
loop that makes such a call runs one element at a time, while NumPy's own float32 exp/log are SIMD.
The functions below use only +, -, *, /, comparisons, selects and bit reinterpretation
(:func:`_bitcast`), which LLVM's loop vectoriser turns into 8 float32 (4 float64) lanes of AVX2 when
a kernel calls them inside a loop. ``exp(x)`` etc. work in the precision of their argument (float32
or float64; the typed builds are ``exp32``, ``exp64``, ...), with one algorithm for both: the
precisions differ only in their constants (:func:`_format`).

exp(x)    Cody-Waite reduction: n = round(x log2 e) (by adding and subtracting 1.5 * 2^mantissa, no
          int conversion), r = x - n ln2_hi - n ln2_lo (exact: ln2_hi has trailing zero bits), so
          |r| <= ln2/2; e^r = 1 + (r + r^2 P(r)) (float32: the Cephes expf minimax polynomial;
          float64: Taylor to r^13); then times 2^n, built from the integer bits that the rounding
          left in the mantissa of the shifted value, applied as two factors 2^(n//2) and
          2^(n - n//2) so that results in the subnormal range round once and overflow gives inf.
          x is clamped to [exp_lo, exp_hi] first (beyond which exp is 0 or inf); NaN passes through.
expm1(x)  exp's reduction and polynomial, whose r + r^2 P(r) is e^r - 1 accurate relative to
          itself; then 2^n (e^r - 1) + (2^n - 1), where 2^n - 1 is exact while n is below the
          mantissa width, else 2 (2^(n-1) e^r) - 1 (2^n alone would overflow one step early). x is
          clamped below at expm1_lo, where e^x - 1 rounds to -1; -0 stays -0.
log(x)    x = 2^k m with m in [sqrt(1/2), sqrt 2) (integer ops on the bits; subnormals are scaled
          up first), f = m - 1, s = f / (2 + f): log(m) = f - f^2/2 + s (f^2/2 + R(s^2)), R a minimax
          polynomial (musl's logf/log); plus k ln2_hi + k ln2_lo. 0 -> -inf, < 0 -> NaN, inf -> inf.
log1p(x)  log(u) + (x - (u - 1)) / u with u = 1 + x: the second term restores what the rounding of
          1 + x lost (Goldberg's correction); u == 1 returns x itself.
tanh(x)   |x| < 0.625: x + x z P(z) / Q(z), z = x^2 (Cephes tanhf / tanh); otherwise
          sign(x) (1 - 2 / (exp(2|x|) + 1)).
erf(x)    |x| < 1: x + x P(x^2); |x| >= 1: sign(x) (1 - exp(-a^2) Q(1 / (1 + a) - mid)), a = |x|
          clamped to erf_hi (4 in float32, 6 in float64), where erf rounds to +-1. P and Q are
          polynomials fitted for this module (docs/erf_fit.py: near-minimax for erf's absolute
          error, mpmath at 40 digits). erf's absolute error does not care how exactly exp(-a^2)
          is rounded (an error of a^2 ulp in the exponent costs at most 0.16 ulp of the result).
sum64(a)  the float64 sum of an array in eight running sums (a reduction loop that vectorises).
leaky(z, s), leaky_grad(g, y, s): ReLU / LeakyReLU / identity as one select, with PyTorch's
          results for NaN and -inf (shared by the activation and batch-norm kernels).

Accuracy (tests/kernels/test_vmath.py, dense grids and the special values): at most 1 ulp from the
correctly rounded result in float32 (exp, log, log1p, tanh, erf; expm1 2 ulp where n = 1 cancels
against 2^n - 1), 1 ulp (exp, log, log1p) and 2 ulp (tanh, expm1, erf) from NumPy / ``math`` in
float64; NumPy's own float32 exp and log are up to 2 and 4 ulp from the correctly rounded result.
0, -0, +-inf and NaN give NumPy's results, and so do the overflow/underflow thresholds.

Every function is ``@njit(inline="always")``: Numba pastes its code into the caller, so the
vectoriser sees one loop body (left to LLVM's inliner, tanh64 with its exp stayed a call and its
loop ran scalar). Conditionals are :func:`_select` (branch-free, which is what the vectoriser needs,
and which keeps Numba's inliner from warning when a function is inlined twice into one caller).
``error_model="numpy"``: a division by zero gives inf/nan instead of a check that blocks
vectorisation. A kernel must still call them in a loop that can vectorise: arrays indexed with the
loop index, no float reduction carried through the loop (Numba does not reassociate float sums;
write the values to an array and use :func:`sum64`). Numba's on-disk cache does not notice a change
in this file by itself: kernels/_registry.py puts a hash of it into every build's name.
"""
import numpy as np
import scipy.special
from numba import njit, types
from numba.extending import intrinsic, overload

_JIT = {"error_model": "numpy"}


def _format(ftype, itype, mantissa, exp_lo, exp_hi, exp_poly, log_poly, tanh_p, tanh_q, ln2_hi,
            ln2_lo, expm1_lo, erf_small, erf_mid, erf_tail, erf_hi):
    """The constants of one floating-point format, as NumPy scalars of that format (Numba freezes
    the closure variables of :func:`_build` into the compiled code as constants of that type)."""
    f, i = ftype, itype
    return dict(
        F=f, I=i,
        log2e=f(1.4426950408889634),
        ln2_hi=f(ln2_hi),                                # ln 2 = ln2_hi + ln2_lo
        ln2_lo=f(ln2_lo),
        exp_lo=f(exp_lo), exp_hi=f(exp_hi),
        round_magic=f(1.5 * 2.0 ** mantissa),            # x + this rounds x to an integer n ...
        round_bits=f(1.5 * 2.0 ** mantissa).view(i),     # ... leaving these bits plus n
        mantissa=i(mantissa),
        bias=i(2 ** (np.dtype(f).itemsize * 8 - mantissa - 2) - 1),         # 127 / 1023
        mant_mask=i(2 ** mantissa - 1),
        tanh_small=f(0.625),
        tanh_p=tuple(f(c) for c in tanh_p),
        tanh_q=tuple(f(c) for c in tanh_q),
        tiny=np.finfo(f).tiny,                           # the smallest normal number
        subnormal_scale=f(2.0 ** mantissa),
        one_bits=f(1).view(i),
        sqrt_half_bits=f(np.sqrt(0.5)).view(i),
        exp_poly=tuple(f(c) for c in exp_poly),          # highest degree first
        log_poly=tuple(f(c) for c in log_poly),
        expm1_lo=f(expm1_lo),
        erf_small=tuple(f(c) for c in erf_small),
        erf_mid=f(erf_mid),
        erf_tail=tuple(f(c) for c in erf_tail),
        erf_hi=f(erf_hi),
    )


_F32 = _format(
    np.float32, np.int32, 23,
    exp_lo=-104.0, exp_hi=89.0,          # e^-104 < half the smallest subnormal; e^89 > max float32
    # Cephes expf: e^r = 1 + r + r^2 P(r) on |r| <= ln2/2.
    exp_poly=(1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
              1.6666665459e-1, 5.0000001201e-1),
    # musl logf: R(z) = z (Lg1 + Lg2 z + Lg3 z^2 + Lg4 z^3).
    log_poly=(0.24279078841, 0.28498786688, 0.40000972152, 0.66666662693),
    # Cephes tanhf (a polynomial: Q = 1).
    tanh_p=(-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
            -3.33332819422e-1),
    tanh_q=(1.0,),
    ln2_hi=0.693359375,                  # 9 significant bits: n ln2_hi is exact for |n| < 2^15
    ln2_lo=-2.12194440e-4,
    expm1_lo=-18.0,                      # e^-18 < 2^-25: below, e^x - 1 rounds to -1
    # erf: fitted here (see the module docstring), highest degree first.
    erf_small=(7.875874871388078e-05, -0.000801686430349946, 0.005189087241888046,
               -0.02685421146452427, 0.11283594369888306, -0.3761262595653534, 0.12837916612625122),
    erf_mid=0.3499999940395355,
    erf_tail=(-0.3494935631752014, 0.5773293972015381, -0.22133474051952362, -0.4112333357334137,
              0.4823574721813202, 0.9775850176811218, 0.2715528905391693),
    erf_hi=4.0,                          # erfc(4) < 2^-25: beyond, erf rounds to 1
)

_F64 = _format(
    np.float64, np.int64, 52,
    exp_lo=-746.0, exp_hi=710.0,
    exp_poly=tuple(1.0 / np.prod(np.arange(1.0, k + 1)) for k in range(13, 1, -1)),  # 1/13! .. 1/2!
    # musl log: Lg1 .. Lg7.
    log_poly=(1.479819860511658591e-01, 1.531383769920937332e-01, 1.818357216161805012e-01,
              2.222219843214978396e-01, 2.857142874366239149e-01, 3.999999999940941908e-01,
              6.666666666666735130e-01),
    # Cephes tanh: P(z) / Q(z), Q monic.
    tanh_p=(-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3),
    tanh_q=(1.0, 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3),
    ln2_hi=6.93147180369123816490e-01,   # fdlibm's: 32 significant bits
    ln2_lo=1.90821492927058770002e-10,
    expm1_lo=-38.0,                      # e^-38 < 2^-54
    erf_small=(-7.795898827002142e-10, 1.3720064546777686e-08, -1.6208483801871705e-07,
               1.6447424703317362e-06, -1.492473690741966e-05, 0.00012055294904839707,
               -0.0008548325975389692, 0.0052239776071164225, -0.02686617064323777,
               0.11283791670945006, -0.37612638903183543, 0.12837916709551256),
    erf_mid=0.32142857142857145,
    erf_tail=(0.8497672669394475, -3.3594042766569108, 4.244002045024231, -2.437865455333097,
              0.003148179998091951, 1.1695910840591537, -0.8426453915558421,
              -0.08091780846071188, 0.5935017614442174, -0.30458646160574976,
              -0.38115313125883143, 0.516380119821341, 0.9490374429273359, 0.2440250774413239),
    erf_hi=6.0,                          # erfc(6) < 2^-54
)


@intrinsic
def _select(typingctx, cond, a, b):
    """``a if cond else b`` as one LLVM select: straight-line code, no branch for the vectoriser
    to flatten (and none for Numba's inliner to rename)."""
    if not isinstance(cond, types.Boolean) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.select(*args)
    return a(cond, a, b), codegen


@intrinsic
def _poly(typingctx, x, c):
    """Horner: c[0] x^(m-1) + ... + c[m-1] for a tuple c of m constants of x's type, as the chain
    p = p * x + c[k] of multiplies and adds, emitted in place (a compiled helper would be one more
    compilation per process and tuple length)."""
    if not isinstance(x, types.Float) or not isinstance(c, types.UniTuple) or c.dtype != x:
        return None

    def codegen(context, builder, sig, args):
        xv, cv = args
        p = builder.extract_value(cv, 0)
        for k in range(1, c.count):
            p = builder.fadd(builder.fmul(p, xv), builder.extract_value(cv, k))
        return p
    return x(x, c), codegen


@intrinsic
def _bitcast(typingctx, x, to):
    """The bits of the scalar ``x`` as the number type ``to`` of the same width (NumPy's
    ``x.view(to)``, emitted in place: Numba compiles its own ``view`` as a helper function)."""
    if not isinstance(to, types.NumberClass):
        return None
    target = to.instance_type
    if not isinstance(x, (types.Integer, types.Float)) or target.bitwidth != x.bitwidth:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(target))
    return target(x, to), codegen


def _build(F, I, log2e, ln2_hi, ln2_lo, exp_lo, exp_hi, round_magic, round_bits, mantissa, bias,
           mant_mask, tanh_small, tiny, subnormal_scale, one_bits, sqrt_half_bits, exp_poly, log_poly,
           tanh_p, tanh_q, expm1_lo, erf_small, erf_mid, erf_tail, erf_hi):
    """exp, expm1, log, log1p, tanh, erf for one format (the algorithms of the module docstring)."""
    zero, one, two, half, inf, nan = F(0), F(1), F(2), F(0.5), F(np.inf), F(np.nan)

    @njit(inline="always", **_JIT)
    def exp(x):
        xc = _select(x > exp_hi, exp_hi, x)              # NaN compares false: it passes through
        xc = _select(xc < exp_lo, exp_lo, xc)
        t = xc * log2e + round_magic
        n = t - round_magic                              # round(x log2 e)
        r = (xc - n * ln2_hi) - n * ln2_lo
        p = one + (r + r * r * _poly(r, exp_poly))       # e^r
        k = _bitcast(F(t), I) - round_bits               # n as an integer
        k1 = k >> 1
        s1 = _bitcast(I((k1 + bias) << mantissa), F)     # 2^(n//2)
        s2 = _bitcast(I((k - k1 + bias) << mantissa), F)  # 2^(n - n//2)
        return p * s1 * s2

    @njit(inline="always", **_JIT)
    def log(x):
        sub = x < tiny
        xs = _select(sub, x * subnormal_scale, x)
        bits = I(_bitcast(F(xs), I) + (one_bits - sqrt_half_bits))
        k = F((bits >> mantissa) - bias) - _select(sub, F(mantissa), zero)    # the exponent
        m = _bitcast(I((bits & mant_mask) + sqrt_half_bits), F)  # in [sqrt(1/2), sqrt 2)
        f = m - one
        s = f / (two + f)
        z = s * s
        hfsq = half * f * f
        r = s * (hfsq + z * _poly(z, log_poly)) + k * ln2_lo - hfsq + f + k * ln2_hi
        special = _select((x != x) | (x == inf), x, _select(x == 0, -inf, nan))
        return _select((x > 0) & (x < inf), r, special)

    @njit(inline="always", **_JIT)
    def log1p(x):
        u = one + x
        lu = log(u)
        r = lu + (x - (u - one)) / u                     # Goldberg's correction
        r = _select((u == inf) | (u == 0), lu, r)        # log(u) is +-inf: no correction
        return _select(u == one, x, r)                   # |x| below half an ulp of 1, and -0

    @njit(inline="always", **_JIT)
    def tanh(x):
        # Both branches have the form base + num / den: select the three, then divide once.
        a = abs(x)
        z = x * x
        small = a < tanh_small
        base = _select(small, x, one)
        num = _select(small, x * z * _poly(z, tanh_p), -two)
        den = _select(small, _poly(z, tanh_q), exp(a + a) + one)  # exp overflows to inf: 1
        r = base + num / den
        r = _select(small | (x > 0), r, -r)
        return _select(a == 0, x, r)                     # keeps the sign of -0

    @njit(inline="always", **_JIT)
    def expm1(x):
        # exp's reduction, x = n ln2 + r; e^x - 1 = 2^n (e^r - 1) + (2^n - 1), where 2^n - 1 is
        # exact while 2^n needs fewer bits than the mantissa; beyond, e^x - 1 = 2 (2^(n-1) e^r) - 1,
        # in that order so that 2^n alone never overflows.
        xc = _select(x > exp_hi, exp_hi, x)              # NaN passes through
        xc = _select(xc < expm1_lo, expm1_lo, xc)
        t = xc * log2e + round_magic
        n = t - round_magic
        r = (xc - n * ln2_hi) - n * ln2_lo
        q = r + r * r * _poly(r, exp_poly)               # e^r - 1, accurate relative to itself
        k = _bitcast(F(t), I) - round_bits
        h = _bitcast(I((k - 1 + bias) << mantissa), F)   # 2^(n-1), a normal number
        s = h + h
        near = s * q + (s - one)
        far = (h * (q + one)) * two - one
        return _select(x == 0, x, _select(n > F(mantissa), far, near))    # keeps -0

    @njit(inline="always", **_JIT)
    def erf(x):
        a = abs(x)
        small = x + x * _poly(x * x, erf_small)          # |x| < 1 (and -0 stays -0)
        ac = _select(a > erf_hi, erf_hi, a)              # beyond erf_hi, erf rounds to +-1
        e = one - exp(-(ac * ac)) * _poly(one / (one + ac) - erf_mid, erf_tail)
        return _select(a < one, small, _select(x < zero, -e, e))

    return exp, expm1, log, log1p, tanh, erf


exp32, expm1_32, log32, log1p32, tanh32, erf32 = _build(**_F32)
exp64, expm1_64, log64, log1p64, tanh64, erf64 = _build(**_F64)


def _generic(name, f32, f64, stub=None):
    """A function ``name(x)`` for jitted code that runs ``f32`` on float32 and ``f64`` on float64
    (and ``stub``, by default NumPy's own function, when called from Python)."""
    stub = getattr(np, name) if stub is None else stub

    def generic(x):
        return stub(x)
    generic.__name__ = generic.__qualname__ = name

    @overload(generic, jit_options=_JIT, inline="always")
    def _typed(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None
    return generic


@njit(inline="always", **_JIT)
def sum64(a):
    """The sum of a 1-d array, in float64. A single running float sum is a chain of dependent adds
    that Numba will not reorder (no fastmath), so its loop cannot vectorise: eight running sums
    (element i goes to sum i % 8) can, as two 4-lane vector adds per eight elements."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = a.size - a.size % 8
    for i in range(0, n8, 8):
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        s4 += a[i + 4]
        s5 += a[i + 5]
        s6 += a[i + 6]
        s7 += a[i + 7]
    for i in range(n8, a.size):
        s0 += a[i]
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


@njit(inline="always", **_JIT)
def leaky(z, s):
    """The piecewise-linear activations as PyTorch computes them, s = 0 for ReLU, the slope for
    LeakyReLU, 1 for the identity (s of z's type): z where z > 0 or z is NaN, else z * s; ReLU gives
    0 for every z <= 0, -inf included (where z * 0 would be NaN)."""
    return _select(z <= 0, _select(s == 0, s, z * s), z)


@njit(inline="always", **_JIT)
def leaky_grad(g, y, s):
    """The gradient through :func:`leaky` from its output y, as PyTorch's backward functions: ReLU
    (s == 0) passes g unless y <= 0 (a NaN output passes it, threshold_backward's rule); otherwise
    g where y > 0, else g * s (leaky_relu_backward's rule)."""
    return _select(_select(s == 0, not (y <= 0), y > 0), g, _select(s == 0, s, g * s))


exp = _generic("exp", exp32, exp64)
expm1 = _generic("expm1", expm1_32, expm1_64)
log = _generic("log", log32, log64)
log1p = _generic("log1p", log1p32, log1p64)
tanh = _generic("tanh", tanh32, tanh64)
erf = _generic("erf", erf32, erf64, scipy.special.erf)
