"""A fingerprint of everything a call could change: parameters, gradients, buffers, every module's
forward cache, optimizer state and hyperparameters, and the random state. Two fingerprints are
equal only if all of it is bitwise equal, so "a failed call changes nothing" is one comparison."""
import hashlib

import numpy as np

import fastlayers as fl
from fastlayers import random
from fastlayers.fused import FusedStep
from fastlayers.module import Module


def _feed(h, obj, identity=True):
    if isinstance(obj, np.ndarray):
        h.update(f"a{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, Module):
        h.update(f"m{type(obj).__name__}{id(obj) if identity else ''}".encode())
        if isinstance(obj, FusedStep):      # a Sequential's step, not one of its modules
            _feed(h, (obj.parts, obj.__dict__.get("_cache")), identity)
    elif isinstance(obj, (tuple, list)):
        h.update(f"s{len(obj)}".encode())
        for item in obj:
            _feed(h, item, identity)
    elif isinstance(obj, dict):
        h.update(f"d{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k], identity)
    elif isinstance(obj, fl.Parameter):
        h.update(f"p{id(obj) if identity else ''}".encode())
    else:
        h.update(repr(obj).encode())


def fingerprint(*objects, identity=True):
    """A hex digest of the modules, optimizers and other objects given, plus the random state.
    ``identity`` includes which array objects the parameters hold (False to compare two models)."""
    h = hashlib.sha256()
    for obj in objects:
        if isinstance(obj, Module):
            for name, m in obj.named_modules():
                h.update(f"module {name} {m.training}".encode())
                _feed(h, m.__dict__.get("_cache"), identity)
                for pname, p in m._parameters.items():
                    h.update(pname.encode())
                    _feed(h, (p.data, p.grad) + ((id(p.data), id(p.grad)) if identity else ()))
                for bname, b in m._buffers.items():
                    h.update(bname.encode())
                    _feed(h, b)
        elif isinstance(obj, fl.Optimizer):
            _feed(h, obj.state_dict())
            if identity:
                _feed(h, [[id(p) for p in g["params"]] for g in obj.param_groups])
        else:
            _feed(h, obj)
    state = random.get_state()
    _feed(h, (state["seed"], state["counter"], repr(state["rng"])))
    return h.hexdigest()
