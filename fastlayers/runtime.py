"""Runtime settings, settled in one place: threads and the memory allocator.

fastlayers' own kernels run on Numba's thread pool; its GEMMs run in BLAS (OpenBLAS in NumPy/SciPy
wheels). Both pools busy-wait by default, and on a machine with few cores they starve each other: a
(64, 784) x (784, 128) GEMM measured 0.7 ms with one BLAS thread and 73 ms with two while another
process was busy. At the sizes of these models a second BLAS thread gains nothing, so importing
fastlayers limits BLAS to one thread (process-wide, for NumPy and SciPy alike) and gives the threads
to Numba's kernels, which decide per call whether a parallel launch pays. ``kernels/__init__.py``
also makes idle OpenMP workers sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the environment says
otherwise.

Memory: glibc serves allocations above its mmap threshold (128 KiB to 32 MiB, adaptive) with fresh
pages from the kernel and returns them on free, so every large activation array of every step pays
the page faults again. On this kind of VM allocating and filling two 3.2 MB arrays took 8 ms that
way and 0.2 ms from the reused heap. :func:`keep_freed_memory` raises the thresholds so freed
memory is reused (as PyTorch's caching allocator does); it runs at import on glibc systems.
"""
import ctypes
import ctypes.util
import sys

import numba
from threadpoolctl import threadpool_limits

_BLAS = {"limiter": None}


def set_num_threads(n=None, blas_threads=1):
    """Use ``n`` threads for the compiled kernels (default: all Numba was started with) and
    ``blas_threads`` for BLAS (``None`` leaves BLAS as it is)."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n is None:
        n = limit
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an integer in [1, {limit}] (NUMBA_NUM_THREADS), got {n!r}")
    numba.set_num_threads(n)
    if blas_threads is not None:
        _BLAS["limiter"] = threadpool_limits(limits=blas_threads, user_api="blas")


def get_num_threads():
    """The number of threads the compiled kernels use."""
    return numba.get_num_threads()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


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
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold))
