"""kernels/data.py: a shuffled mini-batch of uint8 images gathered from the dataset and scaled to
float32 (x / 255) in one pass: the speed run's training batches (64 and 128 rows) and its
evaluation batch (1000), from a 60,000 x 784 dataset (Fashion-MNIST's size).

torch: ``torch.index_select`` of the rows, then ``.float() / 255``, as a PyTorch data pipeline over
an in-memory uint8 tensor would do it.
"""
import numpy as np

from .common import Case, Family, ops, speedup, speedup_row, torch

_DATASET = (60000, 784)
_BATCHES = [64, 128, 1000]
SHAPES = {str(b): b for b in _BATCHES}
_IMAGES = {}


def _images():
    if "x" not in _IMAGES:
        _IMAGES["x"] = np.random.default_rng(0).integers(0, 256, _DATASET, dtype=np.uint8)
    return _IMAGES["x"]


def make(impl, batch):
    images = _images()
    rows = np.random.default_rng(1).permutation(len(images))[:batch]
    if impl == "torch":
        t = torch()
        ti, tr = t.from_numpy(images), t.from_numpy(rows)
        return Case({"gather": lambda: t.index_select(ti, 0, tr).float() / 255})
    k = ops(impl, "gather_scaled")

    def gather():
        out = np.empty((batch, images.shape[1]), np.float32)   # a fresh batch, as DataLoader's
        k.gather_scaled(images, rows, out, 255)
    return Case({"gather": gather})


TRAINING = [("gather_scaled", (128,))]


class GatherScaled(Family):
    make = staticmethod(make)
    shapes = SHAPES
    shape_name = "batch"
    timed = ("gather",)


@speedup_row("batch gather + scale, 128 x 784: numba speed-up over numpy")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
