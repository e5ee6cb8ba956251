"""ModuleList and ModuleDict: hold submodules so they are registered (parameters, state_dict keys,
train/eval, zero_grad) without deciding how they are called, as in PyTorch.

Neither has a ``forward`` or ``backward``: the module that owns one calls its entries in the order
its own ``forward`` chooses, and their backwards in reverse. State-dict keys are PyTorch's:
``layers.0.weight`` for entry 0 of a ModuleList attribute ``layers``, ``heads.cls.weight`` for the
entry ``"cls"`` of a ModuleDict ``heads``.
"""
import operator
from collections.abc import Iterable, Mapping

from fastlayers.module import Module


def _module(value, owner):
    if not isinstance(value, Module):
        raise TypeError(f"{owner} holds Module instances, got {type(value).__name__}")
    return value


class ModuleList(Module):
    """A list of modules, registered under the keys ``"0"``, ``"1"``, ... in order.

    Args:
        modules: an iterable of modules to append (optional).

    Supports indexing (an int, or a slice giving a new ModuleList of the same modules), assignment
    and deletion by index, ``len``, iteration, ``append``, ``extend``, ``insert``, ``pop``, ``+``
    and ``+=``. Deleting or inserting renumbers the keys, as in PyTorch.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _index(self, idx):
        """``idx`` as a position in [0, len), or IndexError/TypeError."""
        if isinstance(idx, bool):
            raise TypeError("ModuleList indices must be integers or slices, got bool")
        try:
            idx = operator.index(idx)
        except TypeError:
            raise TypeError(f"ModuleList indices must be integers or slices, got "
                            f"{type(idx).__name__}") from None
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a ModuleList of length {n}")
        return idx % n

    def _renumber(self, modules):
        """Register ``modules`` (all checked) as entries 0..n-1, dropping the old entries."""
        for key in list(self._modules):
            delattr(self, key)
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return ModuleList(mods[idx])
        return mods[self._index(idx)]

    def __setitem__(self, idx, module):
        idx = self._index(idx)
        setattr(self, str(idx), _module(module, "ModuleList"))

    def __delitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            del mods[idx]
        else:
            del mods[self._index(idx)]
        self._renumber(mods)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        if not isinstance(other, ModuleList):
            return NotImplemented
        return ModuleList(list(self) + list(other))

    def __dir__(self):
        return [k for k in super().__dir__() if not k.isdigit()]

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        setattr(self, str(len(self)), _module(module, "ModuleList"))
        return self

    def extend(self, modules):
        """Append every module of the iterable ``modules`` (all are checked first); returns self."""
        if not isinstance(modules, Iterable) or isinstance(modules, (Module, str, Mapping)):
            raise TypeError(f"ModuleList.extend expects an iterable of modules, got "
                            f"{type(modules).__name__}")
        new = [_module(m, "ModuleList") for m in modules]
        for m in new:
            self.append(m)
        return self

    def insert(self, index, module):
        """Insert ``module`` before position ``index`` (clamped, as list.insert)."""
        _module(module, "ModuleList")
        mods = list(self._modules.values())
        mods.insert(operator.index(index), module)
        self._renumber(mods)

    def pop(self, index=-1):
        """Remove and return the module at ``index``."""
        module = self[index]
        del self[index]
        return module

    def forward(self, *args):
        raise NotImplementedError("ModuleList has no forward(): call its modules from the forward "
                                  "of the module that holds it (or use Sequential)")

    def backward(self, grad_output):
        raise NotImplementedError("ModuleList has no backward(): call its modules' backwards in "
                                  "reverse from the module that holds it (or use Sequential)")


def _entry(owner, key, module):
    """Check that ``module`` may be added to the ModuleDict ``owner`` under ``key``."""
    if not isinstance(key, str):
        raise TypeError(f"ModuleDict keys must be strings, got {type(key).__name__}")
    if not key or "." in key:
        raise KeyError(f"ModuleDict key {key!r} must be a non-empty string without '.' (the "
                       f"state_dict uses '.' between names)")
    if key not in owner._modules and hasattr(owner, key):
        raise KeyError(f"ModuleDict key {key!r} is already an attribute of ModuleDict")
    _module(module, "ModuleDict")


class ModuleDict(Module):
    """An ordered dict of modules, registered under their keys (insertion order is kept).

    Args:
        modules: a mapping or an iterable of (key, module) pairs to add (optional).

    Supports ``d[key]``, ``d[key] = module``, ``del d[key]``, ``key in d``, ``len``, iteration over
    the keys, ``keys``, ``values``, ``items``, ``update``, ``pop`` and ``clear``.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        _entry(self, key, module)
        setattr(self, key, module)

    def __delitem__(self, key):
        if key not in self._modules:
            raise KeyError(key)
        delattr(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules))

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key):
        """Remove ``key`` and return its module."""
        module = self[key]
        del self[key]
        return module

    def clear(self):
        for key in list(self._modules):
            delattr(self, key)

    def update(self, modules):
        """Add or replace entries from a mapping or an iterable of (key, module) pairs (all are
        checked before any is added)."""
        if isinstance(modules, Mapping):
            pairs = list(modules.items())
        elif isinstance(modules, Iterable) and not isinstance(modules, (str, Module)):
            pairs = []
            for j, pair in enumerate(modules):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise TypeError(f"ModuleDict.update: element #{j} must be a (key, module) "
                                    f"pair, got {type(pair).__name__}")
                pairs.append(tuple(pair))
        else:
            raise TypeError(f"ModuleDict.update expects a mapping or an iterable of (key, module) "
                            f"pairs, got {type(modules).__name__}")
        for key, module in pairs:
            _entry(self, key, module)
        for key, module in pairs:
            setattr(self, key, module)

    def forward(self, *args):
        raise NotImplementedError("ModuleDict has no forward(): call its modules from the forward "
                                  "of the module that holds it")

    def backward(self, grad_output):
        raise NotImplementedError("ModuleDict has no backward(): call its modules' backwards from "
                                  "the module that holds it")
