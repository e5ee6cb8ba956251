"""Shared fixtures: the backend switch, the serial/parallel build switch, Hypothesis settings.

``backend_name``  runs a test once per backend (``numba``, ``numpy``), restoring the previous one.
``build``         runs a test once with every compiled dispatcher forced onto its ``.serial`` build and
                  once forced onto its ``.parallel`` build (``parallel_min`` = None / 0), restored after.
"""
import contextlib
import importlib
import pkgutil

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastlayers
import kernels

settings.register_profile(
    "fastlayers",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile("fastlayers")

# Every family module of the kernels package (as kernels/__init__.py imports them).
KERNEL_FAMILIES = tuple(m.name for m in pkgutil.iter_modules(kernels.__path__)
                        if not m.name.startswith("_"))


def _is_dispatcher(obj):
    return all(hasattr(obj, a) for a in ("serial", "parallel", "parallel_min"))


def compiled_dispatchers():
    """Every serial/parallel dispatcher defined in the kernel families, with its dotted name
    (``family.name[key]`` for the builds held in a dict, such as one build per activation code)."""
    found = {}
    for family in KERNEL_FAMILIES:
        module = importlib.import_module(f"kernels.{family}")
        for name, obj in vars(module).items():
            if _is_dispatcher(obj):
                found.setdefault(id(obj), (f"{family}.{name}", obj))
            elif isinstance(obj, dict):
                for key, value in obj.items():
                    if _is_dispatcher(value):
                        found.setdefault(id(value), (f"{family}.{name}[{key!r}]", value))
    return sorted(found.values(), key=lambda item: item[0])


@contextlib.contextmanager
def forced_build(which):
    """Force every compiled dispatcher onto its ``which`` ("serial" or "parallel") build."""
    assert which in ("serial", "parallel")
    disps = [d for _, d in compiled_dispatchers()]
    saved = [d.parallel_min for d in disps]
    try:
        for d in disps:
            d.parallel_min = None if which == "serial" else 0
        yield which
    finally:
        for d, old in zip(disps, saved):
            d.parallel_min = old


@pytest.fixture(params=["serial", "parallel"])
def build(request):
    with forced_build(request.param):
        yield request.param


@pytest.fixture(params=["numba", "numpy"])
def backend_name(request):
    with fastlayers.use_backend(request.param):
        yield request.param


@pytest.fixture
def numba_ops():
    return kernels.backend("numba")


@pytest.fixture
def numpy_ops():
    return kernels.backend("numpy")


def tol(dtype):
    """assert_allclose tolerances for comparing a compiled kernel with its NumPy twin."""
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-11,
                                                                               atol=1e-12)


@pytest.fixture
def close():
    """``close(actual, expected, dtype)``: assert_allclose with the per-dtype twin tolerances."""
    def check(actual, expected, dtype=None, **kw):
        dtype = dtype if dtype is not None else np.asarray(expected).dtype
        np.testing.assert_allclose(actual, expected, **{**tol(dtype), **kw})
    return check
