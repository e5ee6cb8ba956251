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

Data-parallel training (``fastlayers.distributed``) keeps one seed for every rank: the generator
draws the same initial weights and the same global batch order on each, and a dropout mask element
is a hash of (seed, mask counter, the element's index *in the global batch*). ``init()`` sets this
process's :func:`sample_placement` (sample t of a rank's batch is sample rank + t * world_size of
the global batch, as ``DistributedSampler`` shards it), so the ranks' masks differ from one another
and are, together, the mask one process draws for the whole global batch: reproducible, and the
same on any number of ranks.
"""
from collections.abc import Mapping

import numpy as np

_state = {"seed": 0, "rng": np.random.default_rng(0), "counter": 0}
# Where this process's samples sit in the global batch: (offset, stride). Not random state (a
# checkpoint does not carry it): it belongs to the process's place among the ranks.
_placement = [0, 1]


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


def sample_placement():
    """(offset, stride): sample t of this process's batches is sample offset + stride * t of the
    global batch that dropout masks are drawn for. (0, 1) in a single process; (rank, world_size)
    once ``fastlayers.distributed.init()`` has run."""
    return _placement[0], _placement[1]


def set_sample_placement(offset, stride):
    """Set :func:`sample_placement` (``fastlayers.distributed`` does this); 0 <= offset < stride."""
    for name, v in (("offset", offset), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"set_sample_placement: {name} must be an integer, got {v!r}")
    if not 0 <= offset < stride:
        raise ValueError(f"set_sample_placement: need 0 <= offset < stride, got offset {offset}, "
                         f"stride {stride}")
    _placement[:] = [int(offset), int(stride)]
