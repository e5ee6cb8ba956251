"""Files a user keeps: ``save(obj, path)`` / ``load(path)`` in the safetensors format, never pickle.

``obj`` is a state dict, or any nesting of dicts, lists and tuples whose leaves are NumPy arrays,
NumPy scalars, numbers, strings, booleans or None: a training checkpoint with the model's and the
optimizer's state dicts, the random state (:func:`fastlayers.get_rng_state`), the epoch, ...

Arrays are stored as the file's tensors and the rest as JSON in its metadata (under the key
``fastlayers``), with the nesting. A flat dict of arrays keeps its keys as the tensor names, so a
model's ``state_dict()`` saved here loads into its PyTorch twin with
``safetensors.torch.load_file`` + ``load_state_dict`` (the keys and layouts are PyTorch's), and a
file saved from PyTorch (``safetensors.torch.save_file(model.state_dict(), path)``) loads here as a
flat dict that ``Module.load_state_dict`` takes. Inside a nesting, a tensor is named by its path
(``"model/0.weight"``, ``"optimizer/state/0/exp_avg"``).

Writes are atomic (a temporary file beside the target, flushed and synced, then renamed), so a
crash never leaves a half-written file under the target's name. A missing, truncated, corrupted or
foreign file raises :class:`CheckpointError` naming the file.
"""
import json
import math
import numbers
import os

import numpy as np

from fastlayers._io import atomic_open

_META_KEY = "fastlayers"
_FORMAT = 1


class CheckpointError(ValueError):
    """A file that :func:`load` cannot read as a fastlayers or safetensors file."""


def save(obj, path):
    """Write ``obj`` (see the module docstring) to ``path`` as a safetensors file, atomically."""
    tensors = {}
    flat = isinstance(obj, dict) and obj and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())
    if flat:
        tree = {"dict": [[k, _leaf_array(tensors, k, v, k)] for k, v in obj.items()]}
    else:
        tree = _encode(obj, "", tensors)
    meta = {_META_KEY: json.dumps({"format": _FORMAT, "tree": tree}, allow_nan=False)}
    from safetensors.numpy import save as st_save
    data = st_save(tensors, metadata=meta)
    with atomic_open(path) as f:
        f.write(data)


def load(path):
    """Read a file written by :func:`save` (the same nesting back), or any safetensors file (its
    tensors as a flat dict of arrays)."""
    path = os.fspath(path)
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, "np") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated, corrupted or "
                              f"another format): {e}") from None
    if _META_KEY not in metadata:
        return tensors
    try:
        header = json.loads(metadata[_META_KEY])
        if header.get("format") != _FORMAT:
            raise ValueError(f"format {header.get('format')!r}, expected {_FORMAT}")
        return _decode(header["tree"], tensors)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path}: its fastlayers metadata is damaged ({e})") from None


# ---------------------------------------------------------------------------------------- encoding
# A node of the tree is one of: {"tensor": name}, {"dict": [[key, node], ...]} (keys str or int),
# {"list": [...]}, {"tuple": [...]}, {"float": "nan" | "inf" | "-inf"}, or a JSON value.

def _leaf_array(tensors, name, value, where):
    if value.dtype.kind not in "biuf":
        raise TypeError(f"save: {where or 'the object'} is an array of dtype {value.dtype}; only "
                        f"numeric and boolean arrays can be saved")
    unique, n = name, 1
    while unique in tensors:
        n += 1
        unique = f"{name}#{n}"
    tensors[unique] = value if value.flags.c_contiguous else value.copy(order="C")  # 0-d stays 0-d
    return {"tensor": unique}


def _encode(obj, where, tensors):
    if isinstance(obj, np.ndarray):
        return _leaf_array(tensors, where or "tensor", obj, where)
    if isinstance(obj, np.generic):
        return _leaf_array(tensors, where or "tensor", np.asarray(obj), where)
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"save: dict keys must be strings or integers, got {k!r} at "
                                f"{where or 'the top level'}")
            items.append([k, _encode(v, f"{where}/{k}" if where else str(k), tensors)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_encode(v, f"{where}/{i}" if where else str(i), tensors)
                       for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else {"float": repr(value)}
    raise TypeError(f"save: cannot save {type(obj).__name__} at {where or 'the top level'} "
                    f"(arrays, numbers, strings, booleans, None, and dicts, lists and tuples of "
                    f"them)")


def _decode(node, tensors):
    if isinstance(node, dict):
        if "tensor" in node:
            return tensors[node["tensor"]]
        if "dict" in node:
            return {k: _decode(v, tensors) for k, v in node["dict"]}
        if "list" in node:
            return [_decode(v, tensors) for v in node["list"]]
        if "tuple" in node:
            return tuple(_decode(v, tensors) for v in node["tuple"])
        if "float" in node:
            return float(node["float"])
        raise ValueError(f"unknown node {sorted(node)}")
    return node
