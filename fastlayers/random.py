"""One seed for everything random: initialisation, dropout masks and shuffling.

``manual_seed(s)`` resets a NumPy generator (initial weights, DataLoader permutations) and the
counter-based stream that dropout masks are hashed from. The draws themselves never depend on the
thread count: a mask element is a hash of (seed, mask counter, element index), whichever thread
computes it.

What a seed guarantees: on one machine, the same seed, dtype, backend, model, optimizer and batch
sizes give bitwise identical weights, buffers and dropout masks from run to run at the same thread
settings, and on any thread count (1 or N kernel threads, ``fastlayers.set_num_threads``) once
``fastlayers.use_deterministic_algorithms(True)`` keeps BLAS on one thread. By default BLAS uses
several threads, and OpenBLAS rounds some GEMMs differently on one and on two threads (the 784-input
layers: after an epoch the mlp's weights differ by about 3e-7, the mlp-bn model's by up to 4e-3), so
the default guarantees one result per thread count. Nothing is guaranteed across CPU models or
OpenBLAS versions (BLAS picks kernels and block sizes per CPU), between the ``numba`` and ``numpy``
backends, or after BLAS's threads are changed outside fastlayers. See ``fastlayers/runtime.py``.
"""
from collections.abc import Mapping

import numpy as np

_state = {"seed": 0, "rng": np.random.default_rng(0), "counter": 0}


def manual_seed(seed):
    """Seed initialisation, dropout and shuffling. ``seed`` is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _state["seed"] = int(seed)
    _state["rng"] = np.random.default_rng(int(seed))
    _state["counter"] = 0


def initial_seed():
    """The seed last given to :func:`manual_seed` (0 at start-up)."""
    return _state["seed"]


def generator():
    """The shared NumPy generator (initialisation and shuffling draw from it)."""
    return _state["rng"]


def next_key():
    """A fresh (seed, counter) pair for one counter-based draw, e.g. one dropout mask.

    The counter advances by one per call, so successive masks differ and the sequence of masks is
    fixed by the seed alone.
    """
    _state["counter"] += 1
    return _state["seed"], _state["counter"]


def get_state():
    """A snapshot of the random state (pass it to :func:`set_state` to replay the same draws)."""
    rng_state = _state["rng"].bit_generator.state
    return {"seed": _state["seed"], "rng": rng_state, "counter": _state["counter"]}


def set_state(state):
    """Restore a snapshot taken by :func:`get_state` (checked whole before anything changes)."""
    if not isinstance(state, Mapping) or set(state) != {"seed", "rng", "counter"}:
        raise TypeError(f"set_state expects the dict get_state() returns (keys 'seed', 'rng', "
                        f"'counter'), got {state!r:.100}")
    for key in ("seed", "counter"):
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"set_state: {key!r} must be a non-negative integer, got {v!r}")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state["rng"]
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"set_state: 'rng' is not a {type(rng.bit_generator).__name__} state "
                         f"({e})") from None
    _state.update(seed=int(state["seed"]), rng=rng, counter=int(state["counter"]))


def get_rng_state():
    """The random state of initialisation, shuffling and dropout (PyTorch's name), a dict of plain
    numbers that :func:`fastlayers.save` can store; :func:`set_rng_state` restores it."""
    return get_state()


def set_rng_state(state):
    """Restore a state from :func:`get_rng_state` (checked whole before anything changes)."""
    set_state(state)


def get_counter():
    """The dropout stream's position (a failed forward restores it with :func:`set_counter`)."""
    return _state["counter"]


def set_counter(counter):
    _state["counter"] = counter
