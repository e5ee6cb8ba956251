"""``no_grad``: forwards for inference only, as ``torch.no_grad``.

Under ``with fastlayers.no_grad():`` (or a function decorated with ``@fastlayers.no_grad()``) a
module's forward keeps nothing for a backward: its cache is dropped as soon as it returns (inside a
Sequential, after each step), so intermediate activations are freed as the forward goes, and losses
compute no gradient. A backward after such a forward raises a clear error. ``set_grad_enabled(mode)``
and ``is_grad_enabled()`` are PyTorch's switches.
"""
import functools

_state = {"enabled": True}


def is_grad_enabled():
    """Whether forwards keep what a backward needs (False inside :class:`no_grad`)."""
    return _state["enabled"]


class set_grad_enabled:
    """Turn gradient bookkeeping on or off: as a call (from now on) or as a context manager (for the
    block, restoring the previous mode after it)."""

    def __init__(self, mode):
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled: mode must be True or False, got {mode!r}")
        self.previous = _state["enabled"]
        _state["enabled"] = mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state["enabled"] = self.previous
        return False


class no_grad:
    """Context manager and decorator: the forwards inside keep no caches (see the module
    docstring)."""

    def __enter__(self):
        self.previous = _state["enabled"]
        _state["enabled"] = False
        return self

    def __exit__(self, *exc):
        _state["enabled"] = self.previous
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with no_grad():
                return func(*args, **kwargs)
        return wrapper
