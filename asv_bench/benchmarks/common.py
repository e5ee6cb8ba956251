"""Shared pieces of the benchmark suite: the implementation parameter, array factories, threads.

Every family benchmark is parameterised over ``impl``: ``"numba"`` (the compiled kernels),
``"numpy"`` (their pure-NumPy twins, under the same names) and ``"torch"`` (the equivalent
``torch.nn.functional`` op, skipped where torch is not installed).

Threads are settled here, once, before anything is timed: importing kernels makes idle OpenMP
workers sleep (OMP_WAIT_POLICY=PASSIVE, set before Numba or OpenBLAS load); :func:`settle` imports
fastlayers, which keeps BLAS on its default one thread (fastlayers/runtime.py); torch gets
as many threads as Numba. torch is imported through fastlayers.runtime.import_torch, before any
kernel starts Numba's threads, so that it runs on an OpenMP runtime of its own with its own
settings, as it would for a PyTorch user (sharing Numba's made it up to 1.7x slower).

Fork safety: asv's forkserver (asv.conf.json) imports the suite once and forks a process per
benchmark, and GNU OpenMP terminates a child forked from a process that has started it. So
*importing* the suite must not start Numba's threading layer (nor import torch): fastlayers is
imported only by :func:`settle`, called from setup and from the timing helpers, in the forked
process. Kernels are compiled there too.
"""
import abc
import os
import statistics
import time

import kernels  # first: sets OMP_WAIT_POLICY / OPENBLAS_THREAD_TIMEOUT before the pools load
import numba
import numpy as np

IMPLS = ["numba", "numpy", "torch"]
NUM_THREADS = numba.config.NUMBA_NUM_THREADS
DTYPE = np.float32

# A timed call of a few microseconds is noisy on its own. asv averages each sample over several
# calls, each timed on its own (the benchmark's ``number``; setup runs between them and is not
# timed), chosen from the shape alone so every implementation gets the same count: enough calls to
# touch about this many elements. Every reported value is the time of one call.
LOOP_ELEMENTS = 1 << 18

# CI's smoke run (FASTLAYERS_BENCH_SMOKE=1) checks that every benchmark runs, not what it measures:
# each family's time_ benchmarks take its first shape only (every implementation and axis value
# still runs), and every side-by-side ratio (the track_ rows) one round.
SMOKE = os.environ.get("FASTLAYERS_BENCH_SMOKE") == "1"

def settle():
    """Import fastlayers (its import settles Numba's and BLAS's threads): from setup, never at
    module import (see the module docstring)."""
    import fastlayers  # noqa: F401


def calls_for(numel, limit=32):
    """How many calls one asv sample averages for an op over ``numel`` elements (1 to ``limit``)."""
    return int(min(limit, max(1, LOOP_ELEMENTS // max(int(numel), 1))))


def label(shape):
    """The parameter value shown on the dashboard, e.g. ``'64x128'``."""
    return "x".join(str(s) for s in shape)


def shape_labels(shapes):
    """``{label: shape}`` for a family's shapes, in order (the ``shape`` parameter's values)."""
    return {label(s): s for s in shapes}


def _import_torch():
    settle()
    from fastlayers.runtime import import_torch
    return import_torch()


def has_torch():
    """Whether torch is installed (importing it, as :func:`torch` does: call this before running
    any kernel)."""
    return _import_torch() is not None


def torch():
    """The torch module with its threads set, or NotImplementedError (asv's skip) without torch."""
    _torch = _import_torch()
    if _torch is None:
        raise NotImplementedError("torch is not installed")
    if _torch.get_num_threads() != NUM_THREADS:
        _torch.set_num_threads(NUM_THREADS)
    return _torch


def ops(impl, *names):
    """The kernels of backend ``impl`` ("numba" or "numpy"); NotImplementedError (skip) when one
    of ``names`` is not registered yet (a family that has not landed)."""
    settle()
    missing = [n for n in names if n not in kernels.names()]
    if missing:
        raise NotImplementedError(f"kernels not registered: {', '.join(missing)}")
    return kernels.backend(impl)


_ARRAYS = {}


def randn(shape, seed=0, dtype=DTYPE, scale=1.0):
    """A cached C-contiguous standard-normal array (do not write into it)."""
    key = ("randn", tuple(shape), seed, np.dtype(dtype).str, scale)
    if key not in _ARRAYS:
        rng = np.random.default_rng(seed)
        _ARRAYS[key] = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype)
    return _ARRAYS[key]


def uniform(shape, low=0.0, high=1.0, seed=0, dtype=DTYPE):
    """A cached C-contiguous uniform array on [low, high) (do not write into it)."""
    key = ("uniform", tuple(shape), low, high, seed, np.dtype(dtype).str)
    if key not in _ARRAYS:
        rng = np.random.default_rng(seed)
        _ARRAYS[key] = rng.uniform(low, high, shape).astype(dtype)
    return _ARRAYS[key]


def labels(n, classes, seed=0):
    """Cached int64 class labels in [0, classes)."""
    key = ("labels", n, classes, seed)
    if key not in _ARRAYS:
        _ARRAYS[key] = np.random.default_rng(seed).integers(0, classes, n).astype(np.int64)
    return _ARRAYS[key]


def tensor(torch_mod, a, requires_grad=False):
    """A torch tensor holding a copy of ``a``."""
    t = torch_mod.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad)


def torch_case(t, fn, arrays, grad, number=1):
    """The torch Case of ``fn(*inputs)`` over copies of ``arrays`` that require grad: forward is
    one call under no_grad; backward is autograd.grad of one recorded forward for every input,
    given the output gradient ``grad``."""
    inputs = [tensor(t, a, True) for a in arrays]
    grad_t = tensor(t, grad)

    def forward():
        with t.no_grad():
            fn(*inputs)
    out = fn(*inputs)
    return Case({"forward": forward,
                 "backward": lambda: t.autograd.grad(out, inputs, grad_t, retain_graph=True)},
                number)


class Case:
    """One op family at one shape for one implementation: a dict of zero-argument callables
    (``"forward"``, ``"backward"``, ...) over arrays built once, and how many calls one asv sample
    averages (``number``; see LOOP_ELEMENTS).
    """

    def __init__(self, fns, number=1):
        self.fns = fns
        self.number = number

    def warm(self):
        """Call everything once (compiles the Numba kernels for these dtypes and layouts)."""
        for fn in self.fns.values():
            fn()


_CASES = {}


def case(factory, *key):
    """``factory(*key)``, built and warmed once per process (setup runs before every sample)."""
    settle()
    k = (factory.__module__, factory.__qualname__) + key
    if k not in _CASES:
        c = factory(*key)
        c.warm()
        _CASES[k] = c
    return _CASES[k]


def _timed(name):
    def time_call(self, *params):
        self.fns[name]()
    time_call.__name__ = time_call.__qualname__ = f"time_{name}"
    return time_call


class Family(abc.ABC):
    """A kernel family's timing benchmarks: one ``time_<name>`` benchmark per name in ``timed``,
    each over ``impl`` x ``shape`` x the family's own ``axes``, timing one call of the case's
    callable of that name.

    A subclass sets ``make`` (``staticmethod(make)``, ``make(impl, shape, *axes) -> Case``),
    ``shapes`` (dashboard label -> shape), and where they differ from the defaults ``axes``
    (parameter name -> values), ``timed``, ``impls``, ``shape_name`` and ``timeout``. The class is
    abstract until ``make`` is set, so asv skips it wherever it is imported.
    """
    impls = IMPLS
    shape_name = "shape"
    shapes = {}
    axes = {}
    timed = ("forward", "backward")
    timeout = 120

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        shapes = list(cls.shapes)[:1] if SMOKE else list(cls.shapes)
        cls.params = [list(cls.impls), shapes] + [list(v) for v in cls.axes.values()]
        cls.param_names = ["impl", cls.shape_name, *cls.axes]
        for name in cls.timed:
            setattr(cls, f"time_{name}", _timed(name))

    @staticmethod
    @abc.abstractmethod
    def make(impl, shape, *axes):
        """The Case of one implementation at one shape."""

    def setup(self, impl, shape, *axes):
        c = case(self.make, impl, self.shapes[shape], *axes)
        self.fns = c.fns
        # asv reads ``number`` again after setup (its documented per-parameter hook): each sample
        # is the mean of this many calls, each timed on its own.
        self.number = c.number


def speedup_row(pretty_name, timeout=120):
    """Mark a ``track_`` function that returns a numpy/numba time ratio: its unit, dashboard
    name and timeout."""
    def mark(fn):
        fn.unit = "x"
        fn.pretty_name = pretty_name
        fn.timeout = timeout
        return fn
    return mark


def interleaved_medians(fns, rounds=15, min_time=2e-3, lead_time=10e-3):
    """Median seconds per call of each callable in ``fns`` (a dict), timed side by side: every round
    times each callable in turn, so drifts in machine load hit all of them alike. Each timing is a
    loop of as many calls as make it last ``min_time`` (calibrated once per callable), after
    untimed calls lasting ``lead_time``: PyTorch's OpenMP workers keep spinning for about 5 ms
    after its last op, and a loop timed right after a torch callable shared the CPU with them (a
    linear+relu forward and backward measured 1.4-1.7 ms instead of 0.6 ms)."""
    settle()
    rounds = 1 if SMOKE else rounds
    loops = {}
    for name, fn in fns.items():
        fn()  # warm-up (compiles)
        n, t = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            t = time.perf_counter() - t0
            if t >= min_time or n >= 1 << 16:
                break
            n *= 2
        loops[name] = n
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = loops[name]
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < lead_time:
                fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(s) for name, s in samples.items()}


def speedup(factory, *key, rounds=15):
    """numpy time / numba time for every callable of the ``factory(impl, *key)`` case, summed over
    the case's callables (forward + backward), measured side by side."""
    fns = {}
    for impl in ("numba", "numpy"):
        c = factory(impl, *key)
        for name, fn in c.fns.items():
            fns[(impl, name)] = fn
    med = interleaved_medians(fns, rounds=rounds)
    numba_t = sum(t for (impl, _), t in med.items() if impl == "numba")
    numpy_t = sum(t for (impl, _), t in med.items() if impl == "numpy")
    return numpy_t / numba_t


def env_summary():
    """One line naming the thread settings, for scripts that print results."""
    return (f"numba threads {NUM_THREADS} ({numba.config.THREADING_LAYER}), "
            f"Numba's OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} (torch: its own OpenMP "
            f"runtime and defaults), BLAS threads {_blas_threads()}, "
            f"numpy {np.__version__}, numba {numba.__version__}")


def _blas_threads():
    settle()
    import fastlayers
    return fastlayers.get_blas_threads()
