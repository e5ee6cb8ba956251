"""Dropout kernels: masks identical to the NumPy twin, to an independent splitmix64, across builds
and across Numba thread counts; keep rates within binomial bounds."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import dropout as dr
from tests.conftest import forced_build

BUILDS = ("serial", "parallel")


def _splitmix64_reference(seed, counter, n, p):
    """Keep decisions written from the description, in plain Python integers."""
    mask64 = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
        return z ^ (z >> 31)

    base = mix(mix(seed) ^ counter)
    threshold = round(p * 2**32)
    keep = []
    for k in range((n + 1) // 2):
        z = mix((base + (k + 1) * 0x9E3779B97F4A7C15) & mask64)
        keep += [(z >> 32) >= threshold, (z & 0xFFFFFFFF) >= threshold]
    return np.array(keep[:n], np.uint8)


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_mask_is_splitmix64(n):
    for seed, counter, p in [(0, 1, 0.5), (12345, 7, 0.3), (2**40 + 3, 2**33, 0.9)]:
        expected = _splitmix64_reference(seed, counter, n, p)
        np.testing.assert_array_equal(dr.keep_mask_np(n, p, seed, counter), expected)
        _, mask = dr.dropout_forward(np.ones(n, np.float32), p, seed, counter)
        np.testing.assert_array_equal(mask, expected)


@settings(max_examples=30, deadline=None)
@given(shape=st.sampled_from([(1,), (5,), (4097,), (3, 7), (64, 129), (2, 3, 5, 5)]),
       p=st.sampled_from([0.0, 0.1, 0.5, 0.75, 1.0]), seed=st.integers(0, 2**63 - 1),
       counter=st.integers(0, 2**40), dtype=st.sampled_from([np.float32, np.float64]),
       kind=st.sampled_from(BUILDS))
def test_dropout_matches_twin(shape, p, seed, counter, dtype, kind):
    x = np.random.default_rng(counter % 1000).standard_normal(shape).astype(dtype)
    with forced_build(kind):
        y, mask = dr.dropout_forward(x, p, seed, counter)
        dx = dr.dropout_backward(x, mask, p)
    y2, mask2 = dr.dropout_forward_np(x, p, seed, counter)
    assert y.dtype == dtype and mask.dtype == np.uint8 and mask.shape == x.shape
    np.testing.assert_array_equal(mask, mask2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(dx, dr.dropout_backward_np(x, mask, p))
    np.testing.assert_array_equal(dx, y)  # backward with grad = x reproduces the forward


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 40),
       p=st.sampled_from([0.0, 0.2, 0.5, 1.0]), seed=st.integers(0, 2**63 - 1),
       counter=st.integers(0, 2**40), dtype=st.sampled_from([np.float32, np.float64]),
       kind=st.sampled_from(BUILDS))
def test_channel_dropout_matches_twin(rows, cols, p, seed, counter, dtype, kind):
    x = np.random.default_rng(rows * cols).standard_normal((rows, cols)).astype(dtype)
    g = np.random.default_rng(rows + cols).standard_normal((rows, cols)).astype(dtype)
    with forced_build(kind):
        y, mask = dr.dropout_channels_forward(x, p, seed, counter)
        dx = dr.dropout_channels_backward(g, mask, p)
    y2, mask2 = dr.dropout_channels_forward_np(x, p, seed, counter)
    assert mask.shape == (rows,) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, mask2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(dx, dr.dropout_channels_backward_np(g, mask, p))
    np.testing.assert_array_equal(mask, dr.keep_mask_np(rows, p, seed, counter))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_binomial_bounds(p):
    n = 200_000
    x = np.ones(n, np.float32)
    for counter in (1, 2, 3):
        y, mask = dr.dropout_forward(x, p, 42, counter)
        kept = int(mask.sum())
        sd = np.sqrt(n * p * (1 - p))
        assert abs(kept - n * (1 - p)) < 5 * sd
        np.testing.assert_allclose(y[mask == 1], 1 / (1 - p), rtol=1e-6)
        assert (y[mask == 0] == 0).all()
        # neighbouring elements (the two halves of one hash value) are independent too
        both = int((mask[0::2] & mask[1::2]).sum())
        assert abs(both - n / 2 * (1 - p) ** 2) < 5 * np.sqrt(n / 2 * (1 - p) ** 2)


def test_p_zero_keeps_everything_and_p_one_drops_everything():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    y, mask = dr.dropout_forward(x, 0.0, 1, 1)
    np.testing.assert_array_equal(y, x)
    assert mask.all()
    y, mask = dr.dropout_forward(x, 1.0, 1, 1)
    assert not mask.any() and not y.any()
    assert not dr.dropout_backward(x, mask, 1.0).any()


def test_same_key_same_mask_other_key_other_mask():
    x = np.ones(4096, np.float32)
    m = dr.dropout_forward(x, 0.5, 7, 1)[1]
    np.testing.assert_array_equal(m, dr.dropout_forward(x, 0.5, 7, 1)[1])
    assert (m != dr.dropout_forward(x, 0.5, 8, 1)[1]).mean() > 0.4
    assert (m != dr.dropout_forward(x, 0.5, 7, 2)[1]).mean() > 0.4


_THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np
    from kernels import batchnorm as bn, dropout as dr
    for d in (dr._dropout_flat, dr._dropout_channels, bn._train_planes, bn._backward_planes):
        d.parallel_min = 0
    x = np.random.default_rng(0).standard_normal((64, 8, 33)).astype(np.float32)
    h = hashlib.sha256()
    for counter in range(1, 4):
        y, m = dr.dropout_forward(x, 0.3, 99, counter)
        h.update(m.tobytes()); h.update(y.tobytes())
        y, m = dr.dropout_channels_forward(x.reshape(512, 33), 0.3, 99, counter)
        h.update(m.tobytes()); h.update(y.tobytes())
    g, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    y, mean, invstd = bn.batchnorm_train_forward(x, g, b, rm, rv, 0.1, 1e-5, 1, 0.0)
    dg, db = np.zeros(8, np.float32), np.zeros(8, np.float32)
    dx = bn.batchnorm_backward(x, x, y, g, mean, invstd, 1, 0.0, True, dg, db, True)
    for a in (y, mean, invstd, rm, rv, dx, dg, db):
        h.update(a.tobytes())
    import numba
    print(numba.get_num_threads(), h.hexdigest())
""")


def test_masks_and_batchnorm_identical_with_one_and_two_threads():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = {}
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        res = subprocess.run([sys.executable, "-c", _THREAD_SCRIPT], env=env, cwd=root,
                             capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, res.stderr
        n, digest = res.stdout.split()
        assert n == threads
        out[threads] = digest
    assert out["1"] == out["2"]


@settings(max_examples=20, deadline=None)
@given(samples=st.integers(1, 9), per=st.sampled_from([1, 2, 3, 8, 129]),
       world=st.integers(1, 4), p=st.sampled_from([0.2, 0.5]), seed=st.integers(0, 2**63 - 1),
       counter=st.integers(0, 2**40), kind=st.sampled_from(BUILDS))
def test_placed_masks_are_the_global_batch_rows(samples, per, world, p, seed, counter, kind):
    # Rank r of `world`, holding samples r, r + world, ... of a global batch, draws the rows of
    # the mask one process draws for the whole batch (odd and even per-sample counts: the pairs
    # of a hash value straddle samples).
    full = _splitmix64_reference(seed, counter, samples * world * per, p).reshape(-1, per)
    for rank in range(world):
        want = full[rank::world]
        x = np.ones((samples, per), np.float32)
        with forced_build(kind):
            y, mask = dr.dropout_forward(x, p, seed, counter, rank, world, per)
            yc, mc = dr.dropout_channels_forward(np.ones((samples * per, 3), np.float32), p, seed,
                                                 counter, rank, world, per)
        np.testing.assert_array_equal(mask, want)
        np.testing.assert_array_equal(mc.reshape(-1, per), want)
        y2, m2 = dr.dropout_forward_np(x, p, seed, counter, rank, world, per)
        yc2, mc2 = dr.dropout_channels_forward_np(np.ones((samples * per, 3), np.float32), p, seed,
                                                  counter, rank, world, per)
        np.testing.assert_array_equal(m2, want)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(mc2, mc)
        np.testing.assert_array_equal(yc2, yc)
