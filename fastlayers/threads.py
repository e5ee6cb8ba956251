"""Thread settings, settled in one place.

fastlayers' own kernels run on Numba's thread pool; its GEMMs run in BLAS (OpenBLAS in NumPy/SciPy
wheels). Both pools busy-wait by default, and on a machine with few cores they starve each other: a
(64, 784) x (784, 128) GEMM measured 0.7 ms with one BLAS thread and 73 ms with two while another
process was busy. At the sizes of these models a second BLAS thread gains nothing, so importing
fastlayers limits BLAS to one thread (process-wide, for NumPy and SciPy alike) and gives the threads
to Numba's kernels, which decide per call whether a parallel launch pays. ``kernels/__init__.py``
also makes idle OpenMP workers sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the environment says
otherwise.
"""
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
