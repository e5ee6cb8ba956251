"""Every registered kernel is timed by the asv suite, on both backends.

The test builds every case of every benchmark family in asv_bench/benchmarks (each implementation
but torch, every axis value, the family's first shape: what CI's smoke run times) and calls each
of its callables once, with every kernel of both backend namespaces (``kernels.backend(name)``,
which the benchmarks and fastlayers' layers call through) replaced by a wrapper that records its
name. It checks calls, not names in the source: a kernel a family names but never calls, or calls
only from inside another kernel, does not count.

The wrappers of the numba namespace run the NumPy twin (same signature, same results up to
rounding): the test asks which kernels a benchmark calls, not what they compute, so it compiles
nothing. Nothing is timed.
"""
import importlib
import inspect
import itertools
import pathlib
import pkgutil
import sys

import pytest

import kernels

ASV_BENCH = pathlib.Path(__file__).resolve().parents[1] / "asv_bench"
BACKENDS = ("numba", "numpy")


def _benchmark_modules():
    if str(ASV_BENCH) not in sys.path:
        sys.path.insert(0, str(ASV_BENCH))
    package = importlib.import_module("benchmarks")
    return [importlib.import_module(f"benchmarks.{m.name}")
            for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_")]


def _families(modules):
    from benchmarks.common import Family
    found = []
    for mod in modules:
        for obj in vars(mod).values():
            if (inspect.isclass(obj) and issubclass(obj, Family) and not inspect.isabstract(obj)
                    and obj.__module__ == mod.__name__):
                found.append(obj)
    return found


def _run_cases(family):
    """Build and call once every non-torch case of ``family`` at its first shape."""
    shape = family.shapes[next(iter(family.shapes))]
    for impl in family.impls:
        if impl == "torch":
            continue
        for axes in itertools.product(*family.axes.values()):
            for fn in family.make(impl, shape, *axes).fns.values():
                fn()


def _recording(monkeypatch, calls):
    """Replace every kernel of both namespaces by a wrapper adding (backend, name) to ``calls``."""
    twins = {name: getattr(kernels.backend("numpy"), name) for name in kernels.names()}
    for backend in BACKENDS:
        namespace = kernels.backend(backend)
        for name in kernels.names():
            def wrapper(*args, _key=(backend, name), _twin=twins[name], **kwargs):
                calls.add(_key)
                return _twin(*args, **kwargs)
            monkeypatch.setattr(namespace, name, wrapper)


def _called(families):
    calls = set()
    with pytest.MonkeyPatch.context() as mp:
        _recording(mp, calls)
        for family in families:
            _run_cases(family)
    return {b: {name for backend, name in calls if backend == b} for b in BACKENDS}


@pytest.fixture(scope="module")
def families():
    return _families(_benchmark_modules())


@pytest.fixture(scope="module")
def called(families):
    return _called(families)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_registered_kernel_is_called_by_a_benchmark(called, backend):
    missing = sorted(set(kernels.names()) - called[backend])
    assert not missing, (f"registered kernels that no asv benchmark family calls on the {backend} "
                         f"backend (add a family or an axis value in asv_bench/benchmarks): "
                         f"{missing}")


def test_recording_sees_the_calls_of_one_family_only(families):
    # The mechanism itself: one family's cases record exactly the kernels they call, and the
    # namespaces are restored afterwards.
    (dropout2d,) = [f for f in families if f.__name__ == "Dropout2d"]
    before = {b: vars(kernels.backend(b)).copy() for b in BACKENDS}
    assert _called([dropout2d]) == {b: {"dropout_channels_forward", "dropout_channels_backward"}
                                    for b in BACKENDS}
    assert {b: vars(kernels.backend(b)) for b in BACKENDS} == before

