"""Random augmentation of a training batch, with torchvision's names and semantics per sample.

``RandomCrop(size, padding)`` pads every image with zeros and cuts a ``size`` window at a random
place; ``RandomHorizontalFlip(p)`` mirrors each image with probability ``p``; ``Compose`` applies a
list in turn. Each takes a whole (N, C, H, W) batch and returns a new array; each sample gets its
own draw.

A transform owns a counter-based stream (kernels/augment.py): its seed is drawn from
``fastlayers.manual_seed``'s generator when it is made, and call k hashes (seed, k, sample). So a
seed fixes every crop and flip, whatever the thread count; the draws do not disturb dropout's
stream; two transforms made after the same seed in the same order draw the same (the speed run's
PyTorch twin repeats fastlayers' augmentation this way); ``state_dict()`` holds the position for a
checkpoint. Under data parallelism a sample draws for its place in the global batch
(:func:`fastlayers.random.sample_placement`), as dropout does.
"""
import numpy as np

from fastlayers import _checks, backend, random


def _size_pair(name, size):
    """``size`` as (height, width): an int or a pair of ints >= 1."""
    pair = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair (height, width), got {size!r}")
    return tuple(_checks.integer(name, v, minimum=1) for v in pair)


def _batch(x, owner):
    return _checks.float_array(x, "input", ndim=4, owner=owner)


class _RandomTransform:
    """A transform drawing from its own stream (see the module's docstring)."""

    def __init__(self):
        self.seed = int(random.generator().integers(0, 2 ** 63))
        self.calls = 0

    def _next_key(self):
        self.calls += 1
        return self.seed, self.calls

    def state_dict(self):
        return {"seed": self.seed, "calls": self.calls}

    def _parse(self, state):
        """(seed, calls) from a state_dict(), checked."""
        if not isinstance(state, dict) or set(state) != {"seed", "calls"}:
            raise TypeError(f"{type(self).__name__}.load_state_dict expects the dict state_dict() "
                            f"returns (keys 'seed', 'calls'), got {state!r:.100}")
        return _checks.integer("seed", state["seed"]), _checks.integer("calls", state["calls"])

    def load_state_dict(self, state):
        self.seed, self.calls = self._parse(state)

    def draw(self):
        """The key of the next call and this process's placement: (seed, counter, offset,
        stride). Advances the stream, as a call does (the PyTorch twin draws with it)."""
        return self._next_key() + random.sample_placement()


class RandomCrop(_RandomTransform):
    """Crop a random ``size`` window of each image after zero-padding it by ``padding`` on every
    side (``torchvision.transforms.RandomCrop(size, padding)``). ``size``: an int or (height,
    width), at most the padded image."""

    def __init__(self, size, padding=0):
        self.size = _size_pair("size", size)
        self.padding = _checks.integer("padding", padding)
        super().__init__()

    def spans(self, shape):
        """(rows, columns) of possible window origins for images of ``shape`` (N, C, H, W)."""
        h, w = shape[2] + 2 * self.padding, shape[3] + 2 * self.padding
        if self.size[0] > h or self.size[1] > w:
            raise ValueError(f"RandomCrop: size {self.size} is larger than the padded images "
                             f"({h}, {w}) of input shape {tuple(shape)} with padding {self.padding}")
        return h - self.size[0] + 1, w - self.size[1] + 1

    def __call__(self, x):
        x = _batch(x, "RandomCrop")
        self.spans(x.shape)
        out = np.empty(x.shape[:2] + self.size, x.dtype)
        backend.ops().random_crop(x, out, self.padding, *self.draw())
        return out

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip(_RandomTransform):
    """Mirror each image left to right with probability ``p``
    (``torchvision.transforms.RandomHorizontalFlip(p)``)."""

    def __init__(self, p=0.5):
        self.p = _checks.real("p", p, low=0.0, high=1.0)
        super().__init__()

    def __call__(self, x):
        x = _batch(x, "RandomHorizontalFlip")
        out = np.empty_like(x)
        backend.ops().random_hflip(x, out, self.p, *self.draw())
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p:g})"


class Compose:
    """Apply ``transforms`` in turn (``torchvision.transforms.Compose``); a Compose inside is
    spread into its parts."""

    def __init__(self, transforms):
        self.transforms = []
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] must be callable, got {t!r}")
            self.transforms += t.transforms if isinstance(t, Compose) else [t]

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def state_dict(self):
        return {str(i): t.state_dict() for i, t in enumerate(self.transforms)
                if isinstance(t, _RandomTransform)}

    def load_state_dict(self, state):
        mine = self.state_dict()
        if not isinstance(state, dict) or set(state) != set(mine):
            raise TypeError(f"Compose.load_state_dict expects keys {sorted(mine)}, got "
                            f"{state!r:.100}")
        parsed = {k: self.transforms[int(k)]._parse(v) for k, v in state.items()}  # all checked
        for k, (seed, calls) in parsed.items():
            self.transforms[int(k)].seed, self.transforms[int(k)].calls = seed, calls

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def hflip(x):
    """Every image of a (N, C, H, W) batch mirrored left to right (test-time flip averaging)."""
    return np.ascontiguousarray(_batch(x, "hflip")[..., ::-1])
