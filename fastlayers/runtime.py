"""Runtime settings, settled in one place: threads and the memory allocator.

Threads. fastlayers' own kernels run on Numba's OpenMP pool; its GEMMs run in BLAS (OpenBLAS in
NumPy/SciPy wheels). Both pools busy-wait by default, and on a machine with few cores they starve
each other. So ``kernels/__init__.py`` makes idle workers of both pools sleep
(``OMP_WAIT_POLICY=PASSIVE``, ``OPENBLAS_THREAD_TIMEOUT=4``) unless the environment says otherwise.
OpenBLAS reads its variable when its library loads; when NumPy was imported first, the kernels
package makes each loaded OpenBLAS re-read it and restart its workers (``kernels.BLAS_WORKERS_SLEEP``
says whether that worked). Numba's kernels decide per call whether a parallel launch pays.

BLAS runs on one thread unless asked for more (``set_num_threads(n, blas_threads=k)``). A
multi-threaded OpenBLAS GEMM waits for every one of its threads, and when another process holds a
CPU that wait lasts a scheduler time slice: beside one busy process the mlp's training step took
24 ms with two BLAS threads and 0.94 ms with one, the mlp-bn's 55-80 ms and 8.7 ms (2-vCPU Intel
Xeon, asv_bench/floor.py; PyTorch's steps took 1.8-2.5 ms and 13-15 ms there). On an idle machine
two BLAS threads make those steps 1.1x and 1.3x faster (docs/benchmarks.md). One thread is also
what makes a seed give the same bits on any thread count (below).

Reproducibility across thread counts: with :func:`use_deterministic_algorithms` on, the same seed
(:func:`fastlayers.manual_seed`), dtype, backend and batch sizes give bitwise identical weights,
buffers (BatchNorm's running statistics) and dropout masks on 1 or N threads. Numba's kernels give
the same bits on any thread count by construction: every ``prange`` thread owns its outputs, and the
sums a thread reduces run over fixed chunks whose count does not depend on the threads (chunk counts
derived from ``numba.get_num_threads()`` only place the work). Dropout masks are a counter-based
hash of (seed, call, element). BLAS is what differs: OpenBLAS cuts a GEMM's reduction dimension K
into blocks of at most GEMM_Q (448 for its SkylakeX sgemm) and splits a remainder between Q and 2Q
differently on one thread and on several, so the partial sums are rounded at different places. The
784-input layers of the speed-run models hit this (K = 784). So with BLAS on its default one thread
a seed gives one result on any thread count already; deterministic mode guarantees it, for both
backends, by refusing more BLAS threads. With more BLAS threads asked for (and deterministic mode
off) a seed means one result per BLAS thread count. Cutting K into chunks of at most Q before calling BLAS would make the thread counts agree, but Q is
an internal of each OpenBLAS CPU target. Nothing is promised across machines or CPU models, across
OpenBLAS versions, or when BLAS's threads are changed behind fastlayers' back (threadpoolctl, or
another library's calls).

PyTorch, for side-by-side timings: import it with :func:`import_torch`, before any kernel runs, so
that it keeps an OpenMP runtime of its own with its own settings (importing fastlayers only limits
BLAS's threads; Numba's threads start with the first parallel kernel).

Memory: glibc serves allocations above its mmap threshold (128 KiB, rising adaptively up to
32 MiB) with fresh pages from the kernel and trims freed heap above its trim threshold, so the
large activation arrays of a convolutional model pay their page faults again every step (the cnn's
training step takes about 1,600 page faults, 1.25x its CPU time). :func:`keep_freed_memory` raises
both thresholds so freed memory is reused, as PyTorch's caching allocator does; importing
fastlayers calls it on glibc systems unless the environment variable
``FASTLAYERS_KEEP_FREED_MEMORY`` is ``0`` (it is a process-wide setting: the process keeps up to
1 GiB of freed heap instead of returning it). :func:`freed_memory_kept` says whether it applied.
"""
import ctypes
import ctypes.util
import os
import sys
import warnings

import numba
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import kernels

# "wanted": the BLAS threads asked for by set_num_threads or settle(), which BLAS gets back when
# deterministic mode is switched off.
_BLAS = {"limiter": None, "wanted": None, "warned": False}
_DETERMINISTIC = {"on": False}


def set_num_threads(n=None, blas_threads=None):
    """Use ``n`` threads for the compiled kernels (default: all Numba was started with) and
    ``blas_threads`` for BLAS (default: 1, robust on a shared machine; more pay only on a machine
    of one's own, and only when idle BLAS workers sleep: see the module docstring).

    With deterministic algorithms on (:func:`use_deterministic_algorithms`) BLAS stays on one
    thread: the default becomes 1 and an explicit ``blas_threads`` above 1 raises ValueError, as
    the two requests contradict each other. The kernels' thread count is free either way."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n is None:
        n = limit
    _check_threads("threads", n, limit)
    if blas_threads is not None:
        _check_threads("blas_threads", blas_threads, None)
        if blas_threads > 1 and _DETERMINISTIC["on"]:
            raise ValueError(f"blas_threads={blas_threads} contradicts deterministic algorithms, "
                             "which keep BLAS on one thread (a GEMM's result depends on BLAS's "
                             "thread count); call fastlayers.use_deterministic_algorithms(False) "
                             "first, or leave blas_threads out")
    wanted = DEFAULT_BLAS_THREADS if blas_threads is None else blas_threads
    if wanted > 1 and not kernels.BLAS_WORKERS_SLEEP and not _BLAS["warned"]:
        _BLAS["warned"] = True
        warnings.warn("fastlayers: BLAS gets several threads, but an OpenBLAS loaded before "
                      "fastlayers keeps its idle workers busy-waiting (they starve the kernels' "
                      "threads) and could not be restarted. Import fastlayers before numpy and "
                      "scipy, or set OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=PASSIVE in the "
                      "environment", RuntimeWarning, stacklevel=2)
    numba.set_num_threads(n)
    _BLAS["wanted"] = wanted
    _apply_blas()


# See the module docstring: one thread, robust beside other processes.
DEFAULT_BLAS_THREADS = 1


def _apply_blas():
    threads = 1 if _DETERMINISTIC["on"] else _BLAS["wanted"]
    _BLAS["limiter"] = threadpool_limits(limits=threads, user_api="blas")


def settle():
    """What importing fastlayers does: give BLAS its default thread (one), without starting Numba's
    threads. Those start with the first parallel kernel (or set_num_threads), so PyTorch can still
    be imported with an OpenMP runtime of its own in between (:func:`import_torch`)."""
    _BLAS["wanted"] = DEFAULT_BLAS_THREADS
    _apply_blas()


def use_deterministic_algorithms(mode):
    """Make a seed mean one result on any thread count (``mode=True``), or allow several BLAS
    threads again (``False``, the default).

    On, :func:`fastlayers.manual_seed` with the same dtype, backend and batch sizes gives bitwise
    identical weights, buffers and dropout masks whatever :func:`set_num_threads` sets for the
    kernels, because BLAS runs on one thread (the kernels already give the same bits on any thread
    count; the module docstring explains why BLAS does not). BLAS's default is one thread, so the
    switch only refuses more; on two BLAS threads of an idle machine a GEMM-heavy model's step is
    up to 1.3x faster (mlp-bn), the cnn's no faster. Results still differ between CPU models and
    OpenBLAS versions.

    Off, BLAS gets back the threads :func:`set_num_threads` (or the import) gave it. While on,
    ``set_num_threads(n, blas_threads=k)`` with ``k > 1`` raises ValueError. PyTorch's switch of
    the same name; ``mode`` must be a bool (TypeError otherwise)."""
    if not isinstance(mode, (bool, np.bool_)):
        raise TypeError(f"use_deterministic_algorithms: mode must be True or False, got {mode!r}")
    _DETERMINISTIC["on"] = bool(mode)
    if _BLAS["wanted"] is None:   # before settle(): what the import would give
        _BLAS["wanted"] = DEFAULT_BLAS_THREADS
    _apply_blas()


def are_deterministic_algorithms_enabled():
    """Whether :func:`use_deterministic_algorithms` is on."""
    return _DETERMINISTIC["on"]


def _numba_threads_started():
    try:
        numba.threading_layer()
    except ValueError:   # "Threading layer is not initialized"
        return False
    return True


def import_torch():
    """Import PyTorch for side-by-side timings, set up as a PyTorch user gets it; None when it is
    not installed.

    Numba's kernels run on the system's GNU OpenMP runtime, whose idle workers fastlayers makes
    sleep (kernels/__init__.py). PyTorch ships a libgomp of its own, but once Numba's has loaded,
    PyTorch binds to that one instead (the same soname) and inherits the sleeping workers, which
    makes its mlp-bn training step about 1.5x as long and flatters every ratio against it.
    Imported before Numba starts its threads, and with the variables fastlayers defaulted hidden
    from it while it loads, PyTorch gets its own runtime with its own defaults. Importing
    fastlayers does not start Numba's threads; the first parallel kernel or
    :func:`set_num_threads` does, and after that this still imports PyTorch but warns.
    """
    if "torch" in sys.modules:
        return sys.modules["torch"]
    if _numba_threads_started():
        warnings.warn("PyTorch is imported after Numba started its threads: it shares their OpenMP "
                      "runtime and settings, which can make it slower than it is on its own "
                      "(call fastlayers.runtime.import_torch() before running any kernel)",
                      RuntimeWarning, stacklevel=2)
    hidden = {k: os.environ.pop(k) for k in kernels.DEFAULTED_ENV if k in os.environ}
    try:
        import torch
    except ImportError:
        return None
    finally:
        os.environ.update(hidden)
    return torch


def _check_threads(name, n, limit):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (limit is not None and n > limit):
        bound = f"in [1, {limit}] (NUMBA_NUM_THREADS)" if limit is not None else ">= 1"
        raise ValueError(f"{name} must be an integer {bound}, got {n!r}")


def get_blas_threads():
    """The number of threads BLAS (NumPy's and SciPy's OpenBLAS) uses (None: no BLAS found)."""
    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=None)


def get_num_threads():
    """The number of threads the compiled kernels use."""
    return numba.get_num_threads()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


_ALLOCATOR = {"kept": False}


def keep_freed_memory(mmap_threshold=256 << 20, trim_threshold=1 << 30):
    """Ask glibc to serve allocations below ``mmap_threshold`` bytes from the heap and to keep up to
    ``trim_threshold`` bytes of freed heap for reuse. Returns False (and does nothing) where the C
    library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    kept = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    _ALLOCATOR["kept"] = _ALLOCATOR["kept"] or kept
    return kept


def keep_freed_memory_at_import():
    """What importing fastlayers does: :func:`keep_freed_memory`, unless the environment variable
    ``FASTLAYERS_KEEP_FREED_MEMORY`` is ``0``."""
    if os.environ.get("FASTLAYERS_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    return keep_freed_memory()


def freed_memory_kept():
    """Whether glibc's thresholds were raised in this process (by the import or a call of
    :func:`keep_freed_memory`)."""
    return _ALLOCATOR["kept"]
