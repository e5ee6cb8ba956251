"""How a compiled kernel is declared, and how the two backends are assembled.

Every public op exists twice under one name: a Numba kernel (the ``numba`` backend) and a pure-NumPy
twin with the same signature (the ``numpy`` backend, the readable reference). A family module declares
its kernels with :func:`kernel` (an ``@njit`` function) or :func:`register` (a Python composition, e.g.
a BLAS GEMM followed by a fused compiled pass). :func:`backend` returns either set as a namespace.
"""
import functools
import pathlib
import types
import zlib

from numba import njit

# Below this many elements (of the kernel's first argument) a parallel launch costs more than the
# work, so the serial build runs. Tests set a kernel's threshold to 0 to exercise the parallel build.
PARALLEL_MIN = 1 << 16

# Compile options of every kernel. error_model="numpy": a division by zero gives inf/nan as in NumPy
# (and the twins) instead of a per-division check that raises, which blocks vectorisation (measured
# 5x on the Adam update).
OPTIONS = {"cache": True, "error_model": "numpy"}
# Numba's cache index ignores compile options, and it checks only the source file of the function
# it caches, not the helpers compiled into it from the shared helper modules (kernels/_vmath.py,
# kernels/_loops.py). A build renamed with a tag of the options and those sources cannot load a
# stale entry compiled under others. A helper that kernels of another file call belongs in one of
# these modules.
_HELPERS = b"".join(pathlib.Path(__file__).with_name(name).read_bytes()
                    for name in ("_vmath.py", "_loops.py"))
_TAG = str(zlib.crc32(repr(sorted(OPTIONS.items())).encode() + _HELPERS) & 0xFFFF)
# The fast-math flags a kernel may opt into (compiled(fastmath=...)), each with the letter it adds to
# the build's name.
_FASTMATH = {"contract": "c", "reassoc": "r"}

_IMPLS = {"numba": {}, "numpy": {}}


def register(name, numba_impl, numpy_impl):
    """Register ``numba_impl`` and its NumPy twin under ``name``."""
    if name in _IMPLS["numba"]:
        raise RuntimeError(f"kernel {name!r} registered twice")
    _IMPLS["numba"][name] = numba_impl
    _IMPLS["numpy"][name] = numpy_impl


def _renamed(func, suffix, bind=None):
    """A copy of ``func`` with another qualname (and with the globals in ``bind`` replaced):
    Numba's on-disk cache keys on the qualname and the signature, not on the compile flags nor on
    the globals, so each build needs a name of its own."""
    glob = func.__globals__ if bind is None else {**func.__globals__, **bind}
    copy = types.FunctionType(func.__code__, glob, func.__name__ + suffix, func.__defaults__,
                              func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__module__ = func.__module__
    return copy


def compiled(parallel_min=PARALLEL_MIN, fastmath=(), bind=None, variant=None):
    """Compile an ``@njit`` kernel twice from one source, serial and parallel.

    The parallel build runs ``prange`` loops on Numba's threads; in the serial build ``prange`` acts
    as ``range``. A call uses the parallel build when its first argument has at least
    ``dispatch.parallel_min`` elements (``None``: always serial); ``dispatch.runs_parallel(size)``
    tells which build a call of that size gets. Both builds stay reachable as ``.serial`` and
    ``.parallel`` on the returned dispatcher.

    ``fastmath`` opts into LLVM fast-math flags, only these two (neither changes NaN and inf
    semantics: ``np.isnan`` keeps working):

    - ``"contract"`` fuses a multiply and an add into one FMA instruction (one rounding instead of
      two). For kernels bound by multiply-adds, such as the direct convolution (its forward
      measured 13% faster).
    - ``"reassoc"`` lets LLVM reorder float additions, so a loop that carries a sum (a dot product)
      vectorises into several running sums; without it Numba keeps the sequential order and the
      loop runs one element at a time. The order is still fixed by the compiled code, so results
      do not change from run to run or with the thread count, only by rounding from a sequential
      sum.

    ``bind`` ({global name: value}) compiles the source with those module globals replaced, and
    ``variant`` (an identifier) names that binding's builds apart. Numba drops a branch on a
    constant before it types the code, so a kernel that branches on a bound global (``if ACT ==
    RELU:``) compiles only the branch it takes: one source serves many codes without each build
    compiling all of them. The copy sees the module's globals as they are when it is declared.
    """
    if (bind is None) != (variant is None):
        raise ValueError("bind and variant go together")

    def decorate(func):
        flags = set(fastmath)
        if not flags <= _FASTMATH.keys():
            raise ValueError(f"fastmath flags must be among {sorted(_FASTMATH)}, got {sorted(flags)}")
        opts = dict(OPTIONS, fastmath=flags) if flags else OPTIONS
        tag = _TAG + "".join(_FASTMATH[f] for f in sorted(flags))
        name = "" if variant is None else f"_{variant}"
        serial = njit(**opts)(_renamed(func, f"{name}__serial_{tag}", bind))
        parallel = njit(parallel=True, **opts)(_renamed(func, f"{name}__parallel_{tag}", bind))

        @functools.wraps(func)
        def dispatch(*args):
            return parallel(*args) if dispatch.runs_parallel(args[0].size) else serial(*args)
        dispatch.parallel_min = parallel_min
        dispatch.runs_parallel = lambda size: (dispatch.parallel_min is not None
                                               and size >= dispatch.parallel_min)
        dispatch.serial, dispatch.parallel = serial, parallel
        return dispatch
    return decorate


def kernel(twin, parallel_min=PARALLEL_MIN):
    """:func:`compiled`, then registered under the function's own name with its NumPy ``twin``."""
    def decorate(func):
        dispatch = compiled(parallel_min)(func)
        register(func.__name__, dispatch, twin)
        return dispatch
    return decorate


@functools.lru_cache(maxsize=None)
def backend(name):
    """The kernels of backend ``name`` (``"numba"`` or ``"numpy"``) as a read-only namespace."""
    if name not in _IMPLS:
        raise ValueError(f"backend must be one of {sorted(_IMPLS)}, got {name!r}")
    return types.SimpleNamespace(**_IMPLS[name])


def names():
    """The registered kernel names, identical for both backends."""
    return sorted(_IMPLS["numba"])
