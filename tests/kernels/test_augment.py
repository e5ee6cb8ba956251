"""Random crop and horizontal flip: the compiled kernels (both builds) against their NumPy twins
(bitwise), both against a per-sample slicing reference built from the drawn origins, the draws'
range and spread, and placement (a rank's samples draw what one process draws for them)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import augment
from tests.conftest import forced_build


def _crop_reference(x, pad, size, top, left):
    """Sample by sample with np.pad and a slice: what torchvision's RandomCrop does per image."""
    out = []
    for i in range(len(x)):
        padded = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)))
        out.append(padded[:, top[i]:top[i] + size[0], left[i]:left[i] + size[1]])
    return np.stack(out) if out else np.empty((0, x.shape[1]) + size, x.dtype)


@given(n=st.integers(0, 9), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       pad=st.integers(0, 4), dh=st.integers(-4, 4), dw=st.integers(-4, 4),
       dtype=st.sampled_from([np.float32, np.float64]), build=st.sampled_from(["serial", "parallel"]),
       key=st.tuples(st.integers(0, 2**63), st.integers(1, 2**40)),
       placement=st.sampled_from([(0, 1), (1, 2), (3, 4)]))
def test_random_crop_kernel_twin_and_reference(n, c, h, w, pad, dh, dw, dtype, build, key,
                                               placement):
    size = (max(1, min(h + 2 * pad, h + dh)), max(1, min(w + 2 * pad, w + dw)))
    x = np.random.default_rng(n * 7 + h).standard_normal((n, c, h, w)).astype(dtype) + 5
    out = np.full((n, c) + size, np.nan, dtype)
    with forced_build(build):
        augment.random_crop(x, out, pad, *key, *placement)
    twin = np.full_like(out, np.nan)
    augment.random_crop_np(x, twin, pad, *key, *placement)
    np.testing.assert_array_equal(out, twin)
    spans = (h + 2 * pad - size[0] + 1, w + 2 * pad - size[1] + 1)
    top, left = augment.crop_origins_np(n, spans, *key, *placement)
    np.testing.assert_array_equal(out, _crop_reference(x, pad, size, top, left))


@given(n=st.integers(0, 9), c=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 9),
       p=st.sampled_from([0.0, 0.3, 0.5, 1.0]), dtype=st.sampled_from([np.float32, np.float64]),
       build=st.sampled_from(["serial", "parallel"]),
       key=st.tuples(st.integers(0, 2**63), st.integers(1, 2**40)),
       placement=st.sampled_from([(0, 1), (1, 2)]))
def test_random_hflip_kernel_twin_and_reference(n, c, h, w, p, dtype, build, key, placement):
    x = np.random.default_rng(n + w).standard_normal((n, c, h, w)).astype(dtype)
    out = np.full_like(x, np.nan)
    with forced_build(build):
        augment.random_hflip(x, out, p, *key, *placement)
    twin = np.full_like(x, np.nan)
    augment.random_hflip_np(x, twin, p, *key, *placement)
    np.testing.assert_array_equal(out, twin)
    flip = augment.flip_decisions_np(n, p, *key, *placement)
    for i in range(n):
        np.testing.assert_array_equal(out[i], x[i, :, :, ::-1] if flip[i] else x[i])
    if p in (0.0, 1.0) and n:
        assert flip.all() == (p == 1.0) and flip.any() == (p == 1.0)


def test_crop_origins_cover_their_range_evenly():
    top, left = augment.crop_origins_np(90_000, (5, 9), 123, 7)
    assert top.min() == 0 and top.max() == 4 and left.min() == 0 and left.max() == 8
    for values, k in ((top, 5), (left, 9)):
        counts = np.bincount(values, minlength=k)
        expected = len(values) / k
        # a chi-square test at about 1e-4: a biased or stuck draw fails it
        assert ((counts - expected) ** 2 / expected).sum() < 35
    # the two coordinates are drawn from different bits: not correlated
    assert abs(np.corrcoef(top, left)[0, 1]) < 0.02


def test_flip_rate_and_independence_of_keys():
    a = augment.flip_decisions_np(100_000, 0.3, 5, 1)
    b = augment.flip_decisions_np(100_000, 0.3, 5, 2)
    assert abs(a.mean() - 0.3) < 0.006 and abs(b.mean() - 0.3) < 0.006
    assert abs((a & b).mean() - 0.09) < 0.005         # successive calls are independent


def test_placement_gives_each_rank_the_global_batch_draws():
    x = np.random.default_rng(0).standard_normal((12, 1, 5, 5))
    whole = np.empty((12, 1, 5, 5))
    augment.random_crop(x, whole, 2, 9, 4)
    for rank in range(3):
        part = np.empty((4, 1, 5, 5))
        augment.random_crop(np.ascontiguousarray(x[rank::3]), part, 2, 9, 4, rank, 3)
        np.testing.assert_array_equal(part, whole[rank::3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crop_without_padding_at_full_size_is_the_identity(dtype):
    x = np.arange(2 * 3 * 4 * 5, dtype=dtype).reshape(2, 3, 4, 5)
    out = np.empty_like(x)
    augment.random_crop(x, out, 0, 1, 1)
    np.testing.assert_array_equal(out, x)
