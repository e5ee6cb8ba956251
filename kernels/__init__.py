"""fastlayers' engine room: compiled kernels and their NumPy twins, as plain functions on arrays.

Users import :mod:`fastlayers`; this package has no classes, no state and no user-facing API. Each
family module (``linear``, ``activations``, ``softmax``, ...) declares forward/backward pairs; the
``numba`` and ``numpy`` backends expose them under identical names: ``kernels.backend("numba")``.

Thread settings are settled here, once, before Numba or OpenBLAS start their pools: Numba's OpenMP
workers and OpenBLAS's workers both busy-wait by default and on a small machine starve each other
(a GEMM followed by a parallel kernel runs 10x slower). Sleeping workers cost a few microseconds per
parallel launch instead, which is why small kernels run serially (see ``_registry.PARALLEL_MIN``).
The variables are only defaults: set them in the environment to override.

OpenBLAS reads its variable when its library loads (with NumPy, or with ``scipy.linalg``). When
that happened before this import, each loaded OpenBLAS re-reads the environment and stops its
workers, which it restarts with the new timeout on its next threaded call (the path it takes after
a ``fork``). :data:`BLAS_WORKERS_SLEEP` says whether idle BLAS workers sleep; only then does
``fastlayers.runtime`` give BLAS more than one thread.
"""
import os
import sys

_USER_TIMEOUT = "OPENBLAS_THREAD_TIMEOUT" in os.environ
_OPENBLAS_LOADED = any(m in sys.modules for m in ("numpy", "scipy.linalg"))

_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
# The variables set here rather than by the user (fastlayers.runtime.import_torch hides them from
# PyTorch while it loads, so that a side-by-side timing gives PyTorch its own defaults).
DEFAULTED_ENV = tuple(k for k in _DEFAULTS if k not in os.environ)
for _name in DEFAULTED_ENV:
    os.environ[_name] = _DEFAULTS[_name]


def _restart_loaded_openblas():
    """Make every OpenBLAS already loaded re-read the environment and restart its workers; True
    when each one could (``openblas_read_env`` and ``blas_thread_shutdown_`` are exported)."""
    try:
        from threadpoolctl import ThreadpoolController
        libs = [c.dynlib for c in ThreadpoolController().select(internal_api="openblas")
                .lib_controllers]
        calls = [(lib.openblas_read_env, lib.blas_thread_shutdown_) for lib in libs]
    except (ImportError, AttributeError, OSError):
        return False
    for read_env, shutdown in calls:
        read_env()
        shutdown()
    return True


BLAS_WORKERS_SLEEP = _USER_TIMEOUT or not _OPENBLAS_LOADED or _restart_loaded_openblas()

import importlib  # noqa: E402
import pkgutil  # noqa: E402

from kernels import _registry  # noqa: E402

# Importing a family module registers its kernels (compilation happens lazily, on first call).
for _family in pkgutil.iter_modules(__path__):
    if not _family.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_family.name}")

backend = _registry.backend
names = _registry.names

__all__ = ["backend", "names"]
