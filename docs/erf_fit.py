"""Fits the erf coefficients of kernels/_vmath.py and prints them (needs mpmath; about a minute).

    python docs/erf_fit.py

|x| < 1:  erf(x) = x + x P(x^2); P(t) = erf(sqrt t) / sqrt t - 1 is fitted on t in [0, 1] by
          Chebyshev interpolation (mpmath.chebyfit), near-minimax for the absolute error of P.
|x| >= 1: erf(a) = 1 - exp(-a^2) Q(u - mid), u = 1 / (1 + a), a in [1, a_max] (beyond a_max erf
          rounds to 1); Q(s) = exp(a^2) erfc(a) as a polynomial in s = u - mid, mid the float
          nearest the centre of u's range. The fit minimises the largest error of the product,
          |exp(-a^2) (Q - q)| (what erf's absolute error is), by Lawson's iteratively reweighted
          least squares on Chebyshev nodes.
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 40
FORMATS = {  # name: (NumPy type, small-region terms, tail terms, a_max)
    "float32": (np.float32, 7, 7, 4),
    "float64": (np.float64, 12, 14, 6),
}


def small(terms):
    def p(t):
        if t == 0:
            return 2 / mp.sqrt(mp.pi) - 1
        r = mp.sqrt(t)
        return mp.erf(r) / r - 1
    coef, err = mp.chebyfit(p, [0, 1], terms, error=True)
    return coef, err


def tail(ftype, a_max, terms, nodes=300, rounds=40):
    lo, hi = 1 / (1 + mp.mpf(a_max)), mp.mpf(1) / 2
    mid = mp.mpf(float(ftype(float((lo + hi) / 2))))
    half = max(hi - mid, mid - lo)
    s = [mid - mid + half * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / nodes) for k in range(nodes)]
    a = [1 / (v + mid) - 1 for v in s]
    w = [mp.exp(-v * v) for v in a]
    f = [mp.exp(v * v) * mp.erfc(v) for v in a]
    lw = [mp.mpf(1)] * nodes
    for _ in range(rounds):
        m, b = mp.matrix(nodes, terms), mp.matrix(nodes, 1)
        for i in range(nodes):
            scale = mp.sqrt(lw[i]) * w[i]
            for j in range(terms):
                m[i, j] = scale * s[i] ** j
            b[i] = scale * f[i]
        c, _ = mp.qr_solve(m, b)
        err = [abs(w[i] * (f[i] - sum(c[j] * s[i] ** j for j in range(terms))))
               for i in range(nodes)]
        total = sum(lw[i] * err[i] for i in range(nodes))
        lw = [lw[i] * err[i] / total for i in range(nodes)]
    return mid, [c[j] for j in range(terms)][::-1], max(err)


def main():
    for name, (ftype, n_small, n_tail, a_max) in FORMATS.items():
        def show(v):
            return repr(float(ftype(float(v))))
        cs, es = small(n_small)
        mid, ct, et = tail(ftype, a_max, n_tail)
        print(f"{name}: fit errors {mp.nstr(es, 3)} (small), {mp.nstr(et, 3)} (tail)")
        print(f"    erf_small=({', '.join(show(v) for v in cs)}),")
        print(f"    erf_mid={show(mid)},")
        print(f"    erf_tail=({', '.join(show(v) for v in ct)}),")
        print(f"    erf_hi={float(a_max)},")


if __name__ == "__main__":
    main()
