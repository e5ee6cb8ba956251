"""The batch gather: compiled kernel against NumPy's ``images[rows] / 255`` (bitwise), both builds,
float32 and float64."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import data
from tests.conftest import forced_build


@given(n=st.integers(1, 40), d=st.integers(1, 50), b=st.integers(0, 60),
       dtype=st.sampled_from([np.float32, np.float64]), build=st.sampled_from(["serial", "parallel"]),
       seed=st.integers(0, 2**16))
def test_gather_scaled_equals_numpy_division(n, d, b, dtype, build, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, d), dtype=np.uint8)
    images[0, 0], images[-1, -1] = 0, 255                    # both ends of the range
    rows = rng.integers(0, n, b)                             # repeats allowed, any order
    out = np.full((b, d), np.nan, dtype)
    with forced_build(build):
        data.gather_scaled(images, rows, out, 255)
    expected = images[rows] / dtype(255)                     # NumPy, no kernel code
    assert expected.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    twin = np.full((b, d), np.nan, dtype)
    data.gather_scaled_np(images, rows, twin, 255)
    np.testing.assert_array_equal(twin, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_scaled_every_byte_value(dtype):
    images = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rows = np.arange(16)[::-1].copy()
    out = np.empty((16, 16), dtype)
    data.gather_scaled(images, rows, out, 255)
    np.testing.assert_array_equal(out, (np.arange(256, dtype=dtype) / dtype(255)).reshape(16, 16)[::-1])
