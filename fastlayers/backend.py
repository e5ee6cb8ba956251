"""The backend switch: which implementation of the kernels the layers call.

``"numba"`` (the default) runs the compiled kernels; ``"numpy"`` runs their pure-NumPy twins, the
readable reference. Both expose identical names, so any model runs on either::

    fastlayers.set_backend("numpy")          # from now on
    with fastlayers.use_backend("numpy"):    # inside the block only
        ...
"""
import contextlib

import kernels

_current = {"name": "numba", "ops": kernels.backend("numba")}


def get_backend():
    """The name of the active backend."""
    return _current["name"]


def set_backend(name):
    """Make ``name`` (``"numba"`` or ``"numpy"``) the active backend."""
    if name not in ("numba", "numpy"):
        raise ValueError(f"backend must be 'numba' or 'numpy', got {name!r}")
    _current["name"], _current["ops"] = name, kernels.backend(name)


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run the block with backend ``name``, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def ops():
    """The active backend's kernels (a namespace of functions)."""
    return _current["ops"]
