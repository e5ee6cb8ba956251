"""Parameter, Module and Sequential: PyTorch's module contract with an explicit backward.

``forward(x)`` caches what ``backward`` needs; ``backward(grad_output)`` returns the gradient of the
input and *adds* each parameter's gradient into ``param.grad`` (call ``zero_grad()`` between steps).
"""
import functools
from collections import namedtuple
from collections.abc import Mapping

import numpy as np

from fastlayers import _checks, grad_mode, random


class Parameter:
    """A trainable array ``data`` and its gradient ``grad`` (same shape and dtype; zeros at first).

    Both are plain attributes that may be rebound, as in PyTorch: layers and optimizers read them
    at every call, so they always use the arrays the parameter holds now. Assignments are checked:
    ``data`` must be a C-contiguous float32/float64 array; ``grad`` must be None or an array of
    ``data``'s shape and dtype. Rebinding ``data`` to another shape or dtype drops a gradient that
    no longer fits it (``grad`` becomes None). A None ``grad`` means "no gradient": optimizers skip
    the parameter, and the next backward allocates a fresh one.
    """

    __slots__ = ("_data", "_grad")

    def __init__(self, data):
        self._grad = None
        if isinstance(data, np.ndarray) and not data.flags.c_contiguous:
            data = data.copy(order="C")     # (np.ascontiguousarray would make a 0-d array 1-d)
        self.data = data
        self._grad = np.zeros_like(self._data)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"Parameter data must be a numpy.ndarray, got {type(value).__name__}")
        _checks.float_dtype(value.dtype, "Parameter dtype")
        if not value.flags.c_contiguous:
            raise ValueError(f"Parameter data must be C-contiguous (np.ascontiguousarray), got an "
                             f"array of shape {value.shape} with strides {value.strides}")
        g = self._grad
        if g is not None and (g.shape != value.shape or g.dtype != value.dtype):
            self._grad = None
        self._data = value

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, np.ndarray):
                raise TypeError(f"Parameter grad must be a numpy.ndarray or None, got "
                                f"{type(value).__name__}")
            if value.shape != self._data.shape or value.dtype != self._data.dtype:
                raise ValueError(f"Parameter grad must have the data's shape {self._data.shape} and "
                                 f"dtype {self._data.dtype}, got {value.shape} {value.dtype}")
            if not value.flags.c_contiguous:
                raise ValueError("Parameter grad must be C-contiguous (np.ascontiguousarray)")
        self._grad = value

    def grad_buffer(self):
        """The array a backward adds this parameter's gradient into: ``grad``, allocated as zeros
        when it is None."""
        if self._grad is None:
            self._grad = np.zeros_like(self._data)
        return self._grad

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    size = property(lambda self: self._data.size)

    def __repr__(self):
        return f"Parameter(shape={self._data.shape}, dtype={self._data.dtype})"


def zero_grads(params, set_to_none):
    """Zero the gradients of ``params``, or set them to None (Module's and Optimizer's zero_grad)."""
    for p in params:
        if set_to_none:
            p.grad = None
        elif p.grad is not None:
            p.grad.fill(0)


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# What a module's ``_cache`` holds once a backward has used it (None: no forward yet), and after a
# forward under fastlayers.no_grad().
_USED = "used by backward"
_NO_GRAD = "kept nothing (no_grad)"


class Module:
    """Base class of every layer and loss.

    Assigning a :class:`Parameter` or a :class:`Module` to an attribute registers it; buffers (state
    saved with the model but not trained, like BatchNorm's running statistics) are registered with
    :meth:`register_buffer`. ``training`` is True after construction; ``eval()`` clears it recursively.

    ``needs_input_grad``: set it to False on a model's first layer to skip computing the gradient of
    the input (data that is not trained, as PyTorch does for tensors that don't require grad);
    ``backward`` then returns None.

    A custom module defines ``forward(x)``, which keeps what the backward needs with
    :meth:`save_for_backward`, and ``backward(grad_output)``, which reads :attr:`saved_tensors`,
    adds each parameter's gradient into ``param.grad_buffer()`` and returns the input's gradient::

        class Scale(fl.Module):          # y = x * weight, a learned weight per feature
            def __init__(self, features):
                super().__init__()
                self.weight = fl.Parameter(np.ones(features, np.float32))

            def forward(self, x):
                self.save_for_backward(x)
                return x * self.weight.data

            def backward(self, grad_output):
                (x,) = self.saved_tensors
                self.weight.grad_buffer()[...] += (grad_output * x).sum(axis=0)
                return grad_output * self.weight.data

    Check arguments before changing anything, so that a call that raises leaves the module as it
    was. A second ``backward`` after one forward raises, as in PyTorch.
    """

    needs_input_grad = True

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_cache", None)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() in {type(self).__name__}.__init__ "
                                 f"before assigning {name!r}")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        elif name in self._parameters or name in self._modules:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """Register ``array`` (an ndarray, or None for an absent buffer) as buffer ``name``."""
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"buffer {name!r} must be a numpy.ndarray or None")
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    # ------------------------------------------------------------------------------------ compute

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        if not grad_mode._state["enabled"]:       # fastlayers.no_grad(): keep nothing
            object.__setattr__(self, "_cache", _NO_GRAD)
        return out

    def __init_subclass__(cls, **kwargs):
        """A subclass's ``backward`` marks what its forward saved as used once it returns, so a
        second backward after one forward raises (see :meth:`save_for_backward`)."""
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if backward is None or getattr(backward, "releases_saved", False):
            return

        @functools.wraps(backward)
        def releasing(self, *args, **kw):
            result = backward(self, *args, **kw)
            if self.__dict__.get("_cache") is not None:
                object.__setattr__(self, "_cache", _USED)
            return result
        releasing.releases_saved = True
        cls.backward = releasing

    def save_for_backward(self, *values):
        """Keep ``values`` for :meth:`backward` (call it in ``forward``). They are
        :attr:`saved_tensors` until a backward has returned; a ``Sequential`` forward that fails
        puts back what the module saved before it."""
        object.__setattr__(self, "_cache", values)

    @property
    def saved_tensors(self):
        """What :meth:`save_for_backward` kept, as a tuple; RuntimeError before any forward and
        after a backward used it (it would add the gradients twice)."""
        return self._saved()

    def _saved(self):
        """The cache of the last forward, for ``backward``; a clear error when there was no forward
        or a backward has used it already (gradients would be added twice)."""
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        if cache is _NO_GRAD:
            raise RuntimeError(f"{type(self).__name__}.backward(): the last forward ran under "
                               f"fastlayers.no_grad() and kept nothing for a backward; run the "
                               f"forward again outside no_grad")
        if cache is _USED:
            raise RuntimeError(f"{type(self).__name__}.backward() called a second time after one "
                               f"forward(): gradients would be added twice (PyTorch: \"Trying to "
                               f"backward through the graph a second time\"); run forward() again")
        return cache

    # ------------------------------------------------------------------------------------ traversal

    def named_modules(self, prefix=""):
        """This module and all its descendants as (dotted name, module) pairs, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            stack[:0] = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()]

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def _named(self, registry):
        seen = set()
        for prefix, module in self.named_modules():
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self):
        """All parameters of this module and its descendants as (dotted name, Parameter)."""
        return self._named("_parameters")

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        return self._named("_buffers")

    def buffers(self):
        return (b for _, b in self.named_buffers())

    # ------------------------------------------------------------------------------------ state

    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode on this module and all descendants."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) expects a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=False):
        """Set every parameter's gradient to zero, or to None with ``set_to_none`` (PyTorch's
        default is True; filling keeps the arrays, which the next backward reuses)."""
        zero_grads(self.parameters(), set_to_none)

    def state_dict(self):
        """A dict of copies of every parameter and buffer, by dotted name."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update((name, b.copy()) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into the parameters and buffers, in place (values are
        cast to the module's dtypes, as PyTorch's ``copy_`` does).

        Everything is checked before anything is written: a non-mapping argument, a missing or
        unexpected key (with ``strict``), a value that is not a numeric array, a shape mismatch, or
        a float value for an integer buffer raises and leaves the module unchanged.
        Returns ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict expects a mapping of names to arrays (e.g. a "
                            f"state_dict()), got {type(state_dict).__name__}")
        _checks.boolean("load_state_dict: strict", strict)
        own = {name: p.data for name, p in self.named_parameters()}
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = [(own[key], _checks.state_array(f"load_state_dict: {key!r}", value, own[key]))
                  for key, value in state_dict.items() if key in own]
        for target, value in staged:
            np.copyto(target, value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    def to(self, dtype):
        """Convert every parameter (with its gradient) and floating buffer to ``dtype`` (float32 or
        float64). Optimizers follow: their state is converted at the next step."""
        dtype = _checks.float_dtype(dtype)
        for module in self.modules():
            for p in module._parameters.values():
                if p is None or p.dtype == dtype:
                    continue
                g = p.grad
                p.data = p.data.astype(dtype)
                p.grad = None if g is None else g.astype(dtype)
            for name, b in list(module._buffers.items()):
                if b is not None and np.issubdtype(b.dtype, np.floating) and b.dtype != dtype:
                    setattr(module, name, b.astype(dtype))
            object.__setattr__(module, "_cache", None)
        return self

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    # ------------------------------------------------------------------------------------ repr

    def extra_repr(self):
        """The text between the parentheses of this module's repr (subclasses override)."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse.

    Some runs of layers execute as one fused step, with fewer passes over memory: Linear or a
    batch norm followed by an activation, BatchNorm2d + ReLU + MaxPool2d(2) in training, and a
    first block Conv2d + BatchNorm2d + ReLU + MaxPool2d(2). :mod:`fastlayers.fused` holds those
    steps and the rule that picks them, at every forward; results are the same as running the
    layers one after the other (up to float rounding). :attr:`steps` tells which steps ran.
    """

    def __init__(self, *modules):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential takes Module instances, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        mods = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*mods[index])
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"Sequential indices must be integers or slices, got {type(index).__name__}")
        if not -len(mods) <= index < len(mods):
            raise IndexError(f"index {index} is out of range for Sequential of length {len(mods)}")
        return mods[index]

    def forward(self, x):
        from fastlayers import fused     # fused builds on the layer modules, which import this one
        previous = self.__dict__.get("_steps", ())
        steps = fused.plan(list(self._modules.values()), previous)
        undo = self._undo_log()
        keep = grad_mode._state["enabled"]
        try:
            for step in steps:
                x = step.forward(x)
                if not keep:        # no_grad: each step's cache goes as soon as the step is done
                    object.__setattr__(step, "_cache", _NO_GRAD)
        except BaseException:
            _undo(undo)
            raise
        object.__setattr__(self, "_cache", steps if keep else _NO_GRAD)
        object.__setattr__(self, "_steps", steps)
        return x

    @property
    def steps(self):
        """The steps of the last forward that succeeded, in order, each as the tuple of modules it
        ran: one module on its own, or several fused into one step (:mod:`fastlayers.fused`).
        Empty before the first forward."""
        return [getattr(s, "parts", (s,)) for s in self.__dict__.get("_steps", ())]

    def _undo_log(self):
        """What a forward of this container can change: the caches of every descendant and of
        every Sequential's fused steps (the next forward may take them again), the buffers a
        training forward updates in place (running statistics), and the dropout counter. A failed
        forward puts them back, so it changes nothing. (A plain walk: this runs on every
        forward.)"""
        mods = [self]
        for m in mods:
            mods.extend(m._modules.values())
        steps = [s for m in mods for s in m.__dict__.get("_steps", ())]
        caches = [(m, m.__dict__.get("_cache")) for m in (*mods, *steps)]
        buffers = [(b, b.copy()) for m in mods for b in m._buffers.values()
                   if b is not None] if self.training else []
        return caches, buffers, random.get_counter()

    def backward(self, grad_output):
        steps = self._saved()
        g = grad_output
        for m in reversed(steps):
            g = m.backward(g)
            if g is None:
                break
        return g


def _undo(log):
    caches, buffers, counter = log
    for m, cache in caches:
        object.__setattr__(m, "_cache", cache)
    for b, saved in buffers:
        b[...] = saved
    random.set_counter(counter)
