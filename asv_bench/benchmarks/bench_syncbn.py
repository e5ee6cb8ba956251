"""SyncBatchNorm's split kernels (kernels/batchnorm.py, batchnorm_pool.py, convbn.py): the passes
a data-parallel batch norm runs on each rank around its collectives (statistics, normalise; gradient
sums, input gradient), timed in one process with a stand-in group of two ranks that hold the same
batch, so the collectives cost nothing and the rows show the kernels. One training forward and
backward of the speed-run models' batch-norm steps at batch 128:

    mlp-bn    SyncBatchNorm(512) + ReLU on (128, 512)                      (the fused NormActivation)
    cnn-conv  Conv2d(1, 16, 3, p=1) + SyncBatchNorm + ReLU + MaxPool2d(2)   (the fused first block)
    cnn-pool  SyncBatchNorm(32) + ReLU + MaxPool2d(2) on (128, 32, 14, 14)  (NormActivationPool)

numba and numpy are fastlayers' two backends; torch's SyncBatchNorm needs a process group, so it
has no row here (docs/distributed.md measures the collectives).
"""
import numpy as np

from .common import Case, Family, randn, settle, speedup, speedup_row

BLOCKS = ["mlp-bn", "cnn-conv", "cnn-pool"]


class TwoRanks:
    """A stand-in process group: two ranks whose batches equal this one's."""
    rank, size = 0, 2

    def allgather(self, a):
        return np.stack([a, a])

    def allreduce_(self, a, op="sum"):
        a *= 2
        return a

    def broadcast_(self, a, src=0):
        return a


def _block(name, group):
    import fastlayers as fl
    fl.manual_seed(0)
    if name == "mlp-bn":
        return fl.Sequential(fl.SyncBatchNorm(512, process_group=group), fl.ReLU()), (128, 512)
    if name == "cnn-conv":
        model = fl.Sequential(fl.Conv2d(1, 16, 3, padding=1),
                              fl.SyncBatchNorm(16, process_group=group), fl.ReLU(),
                              fl.MaxPool2d(2))
        model[0].needs_input_grad = False
        return model, (128, 1, 28, 28)
    return (fl.Sequential(fl.SyncBatchNorm(32, process_group=group), fl.ReLU(), fl.MaxPool2d(2)),
            (128, 32, 14, 14))


def make(impl, batch, block):
    if impl not in ("numba", "numpy"):
        raise NotImplementedError("no torch row: its SyncBatchNorm needs a process group")
    settle()
    import fastlayers as fl
    model, shape = _block(block, TwoRanks())
    x = randn((batch,) + shape[1:], 0)
    with fl.use_backend(impl):
        g = randn(model(x).shape, 1)

    def step():
        with fl.use_backend(impl):
            model(x)
            model.backward(g)
    return Case({"step": step})


TRAINING = [(f"sync batch norm: {b}", (128, b)) for b in BLOCKS]


class SyncBatchNorm(Family):
    make = staticmethod(make)
    impls = ["numba", "numpy"]
    shapes = {"128": 128}
    shape_name = "batch"
    axes = {"block": BLOCKS}
    timed = ("step",)


@speedup_row("SyncBatchNorm (2 stand-in ranks) + ReLU, 128x512: numba speed-up over numpy")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])
