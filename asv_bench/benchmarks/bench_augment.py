"""kernels/augment.py: a training batch's random crops (28x28 of the image zero-padded by 2) and
random horizontal flips, as the fashion recipes augment a batch of 128 Fashion-MNIST images; the
evaluation-sized batch of 1000 too.

torch: the speed run's PyTorch twin (fastlayers.torch_bridge.augment_to_torch): ``F.pad`` and one
``torch.gather`` for the crop, ``flip`` and ``where`` for the flip, with the same draws.
"""
import numpy as np

from .common import Case, Family, ops, speedup, speedup_row, torch, uniform

SHAPES = {"128x1x28x28": (128, 1, 28, 28), "1000x1x28x28": (1000, 1, 28, 28)}
_PAD, _KEY = 2, (12345, 7)


def make(impl, shape):
    x = uniform(shape)
    if impl == "torch":
        t = torch()
        from fastlayers import transforms
        from fastlayers.torch_bridge import augment_to_torch
        tx = t.from_numpy(x)
        crop = augment_to_torch(transforms.RandomCrop(shape[2:], padding=_PAD))
        flip = augment_to_torch(transforms.RandomHorizontalFlip())
        return Case({"crop": lambda: crop(tx), "flip": lambda: flip(tx)})
    k = ops(impl, "random_crop", "random_hflip")

    def crop():
        out = np.empty_like(x)                  # a fresh batch, as the transform's
        k.random_crop(x, out, _PAD, *_KEY)

    def flip():
        out = np.empty_like(x)
        k.random_hflip(x, out, 0.5, *_KEY)
    return Case({"crop": crop, "flip": flip})


class Augment(Family):
    make = staticmethod(make)
    shapes = SHAPES
    timed = ("crop", "flip")


@speedup_row("random crop + flip, 128 x 1 x 28 x 28: numba speed-up over numpy")
def track_numba_speedup():
    return speedup(make, SHAPES["128x1x28x28"])
