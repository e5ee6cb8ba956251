"""The same model, loss and optimizer in PyTorch, with the same weights: for parity tests and for the
speed run's ``--compare-torch``. Importing this module needs torch; fastlayers itself does not.
"""
import inspect

import numpy as np
import torch

from fastlayers import (activation, batchnorm, container, conv, dropout, layernorm, linear, loss,
                        module, optim, pooling, sparse, transforms)
from kernels.augment import crop_origins_np, flip_decisions_np

TORCH_TO_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


# One table for both directions: each fastlayers class, its torch.nn class, the constructor
# arguments read from the source module's attribute of the same name (``bias``: whether the module
# has one), and the torch attributes that must hold their value because fastlayers has no other.
_LAYERS = [
    (activation.ReLU, "ReLU", (), {}),
    (activation.LeakyReLU, "LeakyReLU", ("negative_slope",), {}),
    (activation.Sigmoid, "Sigmoid", (), {}),
    (activation.Tanh, "Tanh", (), {}),
    (activation.GELU, "GELU", ("approximate",), {}),
    (activation.SiLU, "SiLU", (), {}),
    (activation.Hardtanh, "Hardtanh", ("min_val", "max_val"), {}),
    (activation.ReLU6, "ReLU6", (), {}),
    (activation.ELU, "ELU", ("alpha",), {}),
    (activation.Softplus, "Softplus", ("beta", "threshold"), {}),
    (activation.Softmax, "Softmax", ("dim",), {}),
    (activation.LogSoftmax, "LogSoftmax", ("dim",), {}),
    (linear.Identity, "Identity", (), {}),
    (linear.Flatten, "Flatten", ("start_dim", "end_dim"), {}),
    (linear.Linear, "Linear", ("in_features", "out_features", "bias"), {}),
    (dropout.Dropout, "Dropout", ("p",), {}),
    (dropout.Dropout2d, "Dropout2d", ("p",), {}),
    (conv.Conv2d, "Conv2d", ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                             "dilation", "groups", "bias"), {"padding_mode": "zeros"}),
    (pooling.MaxPool2d, "MaxPool2d", ("kernel_size", "stride", "padding"),
     {"dilation": 1, "ceil_mode": False, "return_indices": False}),
    (pooling.AvgPool2d, "AvgPool2d", ("kernel_size", "stride", "padding"),
     {"ceil_mode": False, "count_include_pad": True, "divisor_override": None}),
    (batchnorm.BatchNorm1d, "BatchNorm1d",
     ("num_features", "eps", "momentum", "affine", "track_running_stats"), {}),
    (batchnorm.BatchNorm2d, "BatchNorm2d",
     ("num_features", "eps", "momentum", "affine", "track_running_stats"), {}),
    (batchnorm.BatchNorm, "BatchNorm1d",        # the notebooks' class: fastlayers to torch only
     ("num_features", "eps", "momentum", "affine", "track_running_stats"), {}),
    (layernorm.LayerNorm, "LayerNorm", ("normalized_shape", "eps", "elementwise_affine", "bias"),
     {}),
    (sparse.Embedding, "Embedding", ("num_embeddings", "embedding_dim", "padding_idx"),
     {"max_norm": None, "scale_grad_by_freq": False, "sparse": False}),
    (pooling.AdaptiveAvgPool2d, "AdaptiveAvgPool2d", ("output_size",), {}),
    (pooling.AdaptiveMaxPool2d, "AdaptiveMaxPool2d", ("output_size", "return_indices"), {}),
    # losses
    (loss.MSELoss, "MSELoss", ("reduction",), {}),
    (loss.L1Loss, "L1Loss", ("reduction",), {}),
    (loss.HuberLoss, "HuberLoss", ("reduction", "delta"), {}),
    (loss.SmoothL1Loss, "SmoothL1Loss", ("reduction", "beta"), {}),
    (loss.BCELoss, "BCELoss", ("weight", "reduction"), {}),
    (loss.BCEWithLogitsLoss, "BCEWithLogitsLoss", ("weight", "reduction", "pos_weight"), {}),
    (loss.CrossEntropyLoss, "CrossEntropyLoss",
     ("weight", "ignore_index", "reduction", "label_smoothing"), {}),
    (loss.NLLLoss, "NLLLoss", ("weight", "ignore_index", "reduction"), {}),
]
_CONTAINERS = [(module.Sequential, "Sequential"), (container.ModuleList, "ModuleList"),
               (container.ModuleDict, "ModuleDict")]
_TO_TORCH = {fl_cls: (name, args, fixed) for fl_cls, name, args, fixed in _LAYERS}
_FROM_TORCH = {}
for _fl_cls, _name, _args, _fixed in _LAYERS:
    _FROM_TORCH.setdefault(_name, (_fl_cls, _args, _fixed))


def _t(a):
    return torch.from_numpy(np.array(a, copy=True))


def _arg(m, name, to_numpy):
    """Constructor argument ``name`` of the module that ``m`` is, read from ``m``."""
    value = getattr(m, name)
    if name == "bias" and not isinstance(value, bool):
        return value is not None
    if to_numpy and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if not to_numpy and isinstance(value, np.ndarray):
        return _t(value)
    return value


def _dtype_kwargs(cls, dtype):
    return {"dtype": dtype} if dtype is not None and "dtype" in inspect.signature(cls).parameters \
        else {}


def _where(path):
    return f" at {path!r}" if path else ""


def _container(cls, m, convert, path):
    """The container ``cls`` (Sequential, ModuleList or ModuleDict, of either library) holding
    ``convert`` of each of ``m``'s entries, in ``m``'s training mode (its entries keep theirs)."""
    children = {k: convert(c, f"{path}.{k}" if path else k) for k, c in m.named_children()}
    if cls.__name__ == "ModuleDict":
        out = cls(children)
    elif cls.__name__ == "ModuleList":
        out = cls(list(children.values()))
    else:
        out = cls(*children.values())
    object.__setattr__(out, "training", m.training)
    return out


def to_torch(m, _path=""):
    """A ``torch.nn.Module`` equivalent to the fastlayers module ``m``, with copies of its
    parameters and buffers (containers are converted entry by entry). TypeError naming the first
    module that has no PyTorch equivalent."""
    for fl_cls, name in _CONTAINERS:
        if type(m) is fl_cls:
            return _container(getattr(torch.nn, name), m, to_torch, _path)
    if type(m) not in _TO_TORCH:
        raise TypeError(f"to_torch: no PyTorch equivalent known for {type(m).__name__}"
                        f"{_where(_path)}")
    name, args, _ = _TO_TORCH[type(m)]
    cls = getattr(torch.nn, name)
    state = {k: _t(v) for k, v in m.state_dict().items()}
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    t = cls(**{a: _arg(m, a, to_numpy=False) for a in args},
            **_dtype_kwargs(cls, floats[0] if floats else None))
    t.load_state_dict(state, strict=True)
    if name == "Embedding":          # a frozen embedding: torch's weight has requires_grad False
        t.weight.requires_grad_(not m.freeze)
    return t.train(m.training)


def from_torch(m, _path=""):
    """The fastlayers twin of the ``torch.nn.Module`` ``m``, with copies of its parameters and
    buffers, in their dtype (containers are converted entry by entry; training mode is kept).

    TypeError naming the first module that fastlayers has no equivalent for, or an option of it
    fastlayers does not support. A module class of your own has no automatic twin: write it as a
    fastlayers Module with the same attribute names and copy the weights with
    ``twin.load_state_dict(m.state_dict())``.
    """
    if not isinstance(m, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(m).__name__}")
    name = type(m).__name__
    for fl_cls, torch_name in _CONTAINERS:
        if type(m) is getattr(torch.nn, torch_name):
            return _container(fl_cls, m, from_torch, _path)
    if name not in _FROM_TORCH or type(m) is not getattr(torch.nn, name, None):
        if type(m).__module__.startswith("torch."):
            raise TypeError(f"from_torch: fastlayers has no equivalent of torch.nn.{name}"
                            f"{_where(_path)}")
        raise TypeError(f"from_torch: {type(m).__qualname__}{_where(_path)} is a module class of "
                        f"your own, which has no automatic twin: write it as a fastlayers Module "
                        f"and copy the weights with twin.load_state_dict(module.state_dict())")
    fl_cls, args, fixed = _FROM_TORCH[name]
    for attr, value in fixed.items():
        if getattr(m, attr) != value:
            raise TypeError(f"from_torch: {name}({attr}={getattr(m, attr)!r}){_where(_path)} is "
                            f"not supported by fastlayers (only {attr}={value!r})")
    state = m.state_dict()
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    if floats and floats[0] not in TORCH_TO_NUMPY:
        raise TypeError(f"from_torch: {name}{_where(_path)} holds {floats[0]} weights; fastlayers "
                        f"holds float32 or float64 (call .float() or .double() first)")
    dtype = TORCH_TO_NUMPY[floats[0]] if floats else None
    twin = fl_cls(**{a: _arg(m, a, to_numpy=True) for a in args}, **_dtype_kwargs(fl_cls, dtype))
    twin.load_state_dict(state, strict=True)
    if name == "Embedding":
        twin.freeze = not m.weight.requires_grad
    return twin.train(m.training)


def optimizer_to_torch(opt, params):
    """A ``torch.optim`` optimizer over ``params`` with ``opt``'s hyperparameters (fresh state)."""
    d = dict(opt.defaults)
    table = {optim.SGD: torch.optim.SGD, optim.Momentum: torch.optim.SGD,
             optim.RMSprop: torch.optim.RMSprop, optim.Adam: torch.optim.Adam,
             optim.AdamW: torch.optim.AdamW, optim.NAdam: torch.optim.NAdam}
    if type(opt) not in table:
        raise TypeError(f"no PyTorch equivalent known for {type(opt).__name__}")
    return table[type(opt)](params, **d)


class TorchEngine:
    """The PyTorch twin of :class:`fastlayers.train.Engine`: same model (weights copied), loss and
    optimizer hyperparameters; batches arrive as NumPy arrays and are wrapped without copying."""

    name = "pytorch"

    def __init__(self, model, loss_fn, optimizer, schedule="none", total_steps=None,
                 clip_grad=None, augment=None, tta_flip=False):
        from fastlayers.train import make_scheduler
        self.model = to_torch(model)
        self.loss_fn = to_torch(loss_fn)
        self.optimizer = optimizer_to_torch(optimizer, self.model.parameters())
        self.scheduler = make_scheduler(torch.optim.lr_scheduler, schedule, self.optimizer,
                                        optimizer.defaults["lr"], total_steps)
        self.clip_grad, self.tta_flip = clip_grad, tta_flip
        self.augment = None if augment is None else augment_to_torch(augment)

    def train_step(self, x, y):
        x = torch.from_numpy(x)
        if self.augment is not None:
            x = self.augment(x)
        out = self.model(x)
        loss = self.loss_fn(out, torch.from_numpy(y))
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.item()

    def predict(self, x):
        with torch.no_grad():
            x = torch.from_numpy(x)
            logits = self.model(x)
            if self.tta_flip:
                logits = logits + self.model(x.flip(3))
            return logits.argmax(dim=1).numpy()

    def train(self, mode):
        self.model.train(mode)


def augment_to_torch(transform):
    """``transform`` (fastlayers.transforms) as PyTorch ops on a (N, C, H, W) tensor. The
    per-sample draws come from ``transform``'s own stream (kernels/augment.py's NumPy hash, N
    values per call), so a twin made from a transform in the same state crops and flips exactly
    as fastlayers does; the padding, cropping and mirroring are torch ops."""
    if isinstance(transform, transforms.Compose):
        parts = [augment_to_torch(t) for t in transform.transforms]

        def compose(x):
            for part in parts:
                x = part(x)
            return x
        return compose
    if isinstance(transform, transforms.RandomCrop):
        pad, (sh, sw) = transform.padding, transform.size

        def crop(x):
            n, c, h, w = x.shape
            top, left = crop_origins_np(n, transform.spans(x.shape), *transform.draw())
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)).reshape(n, c, -1)
            # window pixel (i, j) of sample t is flat pixel (top_t + i) * width + left_t + j of
            # the padded image: one gather (faster than advanced indexing, measured 4-10x)
            rows = torch.from_numpy(top)[:, None, None] + torch.arange(sh)[:, None]
            flat = rows * (w + 2 * pad) + torch.from_numpy(left)[:, None, None] + torch.arange(sw)
            index = flat.reshape(n, 1, sh * sw).expand(n, c, sh * sw)
            return torch.gather(padded, 2, index).reshape(n, c, sh, sw)
        return crop
    if isinstance(transform, transforms.RandomHorizontalFlip):
        def flip(x):
            n = x.shape[0]
            chosen = torch.from_numpy(flip_decisions_np(n, transform.p, *transform.draw()))
            return torch.where(chosen[:, None, None, None], x.flip(3), x)
        return flip
    raise TypeError(f"no PyTorch twin known for the transform {transform!r}")
