"""Data parallelism in one process: the optional import, DistributedSampler and
DataLoader(sampler=), dropout placement, SyncBatchNorm (exactly BatchNorm without a group; with a
stand-in group of identical ranks, through the unfused and the fused steps), the exact zero
gradient of a bias before a batch norm, the gradient reducer, and the speed run's --distributed
errors. The 2-rank MPI jobs are in test_distributed_mpi.py."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import fastlayers as fl
from fastlayers import random
from fastlayers.data import DataLoader, DistributedSampler

HAS_MPI = importlib.util.find_spec("mpi4py") is not None
needs_mpi4py = pytest.mark.skipif(not HAS_MPI, reason="needs mpi4py: pip install "
                                                      "'fastlayers[mpi]'")


# ------------------------------------------------------------------------------ the import

def test_fastlayers_does_not_import_mpi4py():
    code = "import sys, fastlayers; assert 'mpi4py' not in sys.modules, 'mpi4py imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


def test_distributed_without_mpi4py_names_the_extra():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "try:\n    import fastlayers.distributed\n"
            "except ImportError as e:\n    print(e)\nelse:\n    raise SystemExit('imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, check=True).stdout
    assert "pip install 'fastlayers[mpi]'" in out and "mpi4py" in out


def test_speed_run_distributed_without_mpi4py_is_a_usage_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from fastlayers import mnist\nmnist.parse_args(['--distributed'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    assert "--distributed needs mpi4py" in proc.stderr and "fastlayers[mpi]" in proc.stderr


def test_speed_run_distributed_does_not_compare():
    from fastlayers import mnist
    with pytest.raises(SystemExit) as e:
        mnist.parse_args(["--distributed", "--compare-numpy"])
    assert e.value.code == 2


# ------------------------------------------------------------------------------ sampling

def test_sampler_shards_are_disjoint_strided_and_padded_as_pytorch():
    shards = [DistributedSampler(10, num_replicas=4, rank=r, shuffle=False) for r in range(4)]
    assert [len(s) for s in shards] == [3] * 4
    assert [list(s) for s in shards] == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]
    dropped = [list(DistributedSampler(10, num_replicas=4, rank=r, shuffle=False,
                                       drop_last=True)) for r in range(4)]
    assert dropped == [[0, 4], [1, 5], [2, 6], [3, 7]]
    # more ranks than samples: the padding repeats the order
    assert [list(DistributedSampler(2, num_replicas=5, rank=r, shuffle=False))
            for r in range(5)] == [[0], [1], [0], [1], [0]]


def test_sampler_order_is_seeded_per_epoch_and_shared_by_the_ranks():
    a = DistributedSampler(50, num_replicas=2, rank=0, seed=3)
    b = DistributedSampler(50, num_replicas=2, rank=1, seed=3)
    first = np.concatenate([a.indices(), b.indices()])
    assert sorted(first.tolist()) == list(range(50))
    np.testing.assert_array_equal(a.indices(), DistributedSampler(50, 2, 0, seed=3).indices())
    a.set_epoch(1)
    assert not np.array_equal(a.indices(), first[:25])
    assert not np.array_equal(DistributedSampler(50, 2, 0, seed=4).indices(), first[:25])


def test_sampler_without_seed_follows_manual_seed_like_a_shuffled_loader():
    # Rank r's indices are positions r, r + N, ... of the permutation one process draws.
    fl.manual_seed(5)
    whole = fl.random.generator().permutation(30)
    for r in range(3):
        fl.manual_seed(5)
        np.testing.assert_array_equal(DistributedSampler(30, 3, r, seed=None).indices(),
                                      whole[r::3])


def test_sampler_arguments_are_checked():
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="dataset"):
        DistributedSampler(object(), 2, 0)
    with pytest.raises(TypeError, match="shuffle"):
        DistributedSampler(10, 2, 0, shuffle=1)
    with pytest.raises(ValueError, match="seed"):
        DistributedSampler(10, 2, 0, seed=-1)
    with pytest.raises(RuntimeError, match=r"fastlayers.distributed.init\(\)"):
        DistributedSampler(10)   # no process group, no num_replicas and rank
    assert len(DistributedSampler(np.zeros((7, 2)), 2, 1)) == 4


def test_loader_takes_batches_in_the_samplers_order():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    sampler = DistributedSampler(10, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(x, y, batch_size=2, sampler=sampler)
    assert loader.num_samples == 5 and len(loader) == 3
    got = [yb.tolist() for _, yb in loader]
    assert got == [[1, 3], [5, 7], [9]]
    assert [xb[:, 0].tolist() for xb, _ in loader] == [[2.0, 6.0], [10.0, 14.0], [18.0]]
    assert "sampler=DistributedSampler" in repr(loader)
    assert len(DataLoader(x, y, batch_size=2, sampler=sampler, drop_last=True)) == 2


def test_loader_sampler_errors():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(x, y, sampler=[0, 1], shuffle=True)
    with pytest.raises(TypeError, match="sampler"):
        DataLoader(x, y, sampler=5)
    with pytest.raises(IndexError, match="out of range"):
        list(DataLoader(x, y, sampler=[0, 4]))
    with pytest.raises(IndexError, match="out of range"):
        list(DataLoader(x, y, sampler=[-1]))


# ------------------------------------------------------------------------------ dropout

@pytest.mark.parametrize("layer, shape", [(fl.Dropout(0.3), (6, 7)),
                                          (fl.Dropout(0.5), (6, 3, 5)),
                                          (fl.Dropout2d(0.4), (6, 5, 2, 3))])
def test_placed_dropout_draws_the_global_batch_masks(backend_name, layer, shape):
    # Ranks holding samples r, r + N, ... of the global batch get the rows of its mask: distinct
    # on each rank, and together the mask of one process.
    x = np.ones(shape, np.float32)
    fl.manual_seed(11)
    whole = layer(x)
    rows = []
    try:
        for r in range(3):
            fl.manual_seed(11)
            random.set_sample_placement(r, 3)
            rows.append(layer(x[r::3].copy()))
    finally:
        random.set_sample_placement(0, 1)
    for r in range(3):
        np.testing.assert_array_equal(rows[r], whole[r::3])
    assert not np.array_equal(rows[0], rows[1])


def test_sample_placement_is_checked():
    with pytest.raises(ValueError, match="offset < stride"):
        random.set_sample_placement(2, 2)
    with pytest.raises(TypeError, match="integer"):
        random.set_sample_placement(0.0, 1)
    assert random.sample_placement() == (0, 1)


# ------------------------------------------------------------------------------ SyncBatchNorm

class TwinGroup:
    """A stand-in process group of ``size`` ranks that all hold this rank's batch: a global batch
    of ``size`` copies, whose statistics are the local batch's."""
    rank = 0

    def __init__(self, size=2):
        self.size = size
        self.calls = []

    def allgather(self, a):
        self.calls.append("allgather")
        return np.stack([a] * self.size)

    def allreduce_(self, a, op="sum"):
        self.calls.append("allreduce")
        a *= self.size
        return a

    def broadcast_(self, a, src=0):
        return a


def _pair(build, group=None):
    fl.manual_seed(4)
    plain = build()
    fl.manual_seed(4)
    sync = fl.SyncBatchNorm.convert_sync_batchnorm(build(), process_group=group)
    return plain, sync


def _train_both(plain, sync, x, g):
    out = []
    for model in (plain, sync):
        model.zero_grad()
        y = model(x)
        dx = model.backward(g)
        out.append((y, dx, [p.grad.copy() for p in model.parameters()]))
    return out


def _mlp():
    return fl.Sequential(fl.Linear(6, 5), fl.BatchNorm1d(5), fl.ReLU(), fl.Linear(5, 3))


def _cnn():
    model = fl.Sequential(fl.Conv2d(2, 3, 3, padding=1), fl.BatchNorm2d(3), fl.ReLU(),
                          fl.MaxPool2d(2), fl.Conv2d(3, 4, 3, padding=1), fl.BatchNorm2d(4),
                          fl.ReLU(), fl.MaxPool2d(2))
    model[0].needs_input_grad = False
    return model


def test_sync_batchnorm_without_a_group_is_batchnorm_bit_for_bit():
    for build, shape in ((_mlp, (8, 6)), (_cnn, (4, 2, 8, 8))):
        plain, sync = _pair(build)
        assert any(isinstance(m, fl.SyncBatchNorm) for m in sync.modules())
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(build()(x).shape).astype(np.float32)
        (y, dx, grads), (y2, dx2, grads2) = _train_both(plain, sync, x, g)
        assert [len(s) for s in plain.steps] == [len(s) for s in sync.steps]
        np.testing.assert_array_equal(y, y2)
        if dx is not None:
            np.testing.assert_array_equal(dx, dx2)
        for a, b in zip(grads, grads2):
            np.testing.assert_array_equal(a, b)
        for (k, a), (k2, b) in zip(plain.state_dict().items(), sync.state_dict().items()):
            assert k == k2
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("build, shape, counts", [(_mlp, (8, 6), [8]),
                                                  (_cnn, (4, 2, 8, 8), [256, 64])])
def test_sync_batchnorm_over_identical_ranks_is_the_local_batchnorm(backend_name, build, shape,
                                                                    counts):
    # Two ranks with the same batch have its statistics: outputs and gradients of the plain
    # model, through the synchronised passes (unfused; NormActivationPool; ConvBlock), one
    # allgather per layer forward and one allreduce per layer backward.
    group = TwinGroup()
    plain, sync = _pair(build, group)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    g = rng.standard_normal(build()(x).shape).astype(np.float32)
    (y, dx, grads), (y2, dx2, grads2) = _train_both(plain, sync, x, g)
    layers = sum(isinstance(m, fl.SyncBatchNorm) for m in sync.modules())
    assert group.calls == ["allgather"] * layers + ["allreduce"] * layers
    assert [len(s) for s in plain.steps] == [len(s) for s in sync.steps]
    np.testing.assert_allclose(y, y2, rtol=1e-5, atol=1e-5)
    if dx is not None:
        np.testing.assert_allclose(dx, dx2, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, grads2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    plain_norms = [m for m in plain.modules() if isinstance(m, (fl.BatchNorm1d, fl.BatchNorm2d))]
    sync_norms = [m for m in sync.modules() if isinstance(m, fl.SyncBatchNorm)]
    for bn, sbn, m in zip(plain_norms, sync_norms, counts):
        np.testing.assert_allclose(sbn.running_mean, bn.running_mean, rtol=1e-6, atol=1e-6)
        # running_var takes the unbiased variance of the global batch, 2M values, not M
        var = (bn.running_var.astype(np.float64) - 0.9) / 0.1 * (m - 1) / m
        np.testing.assert_allclose(sbn.running_var, 0.9 + 0.1 * var * 2 * m / (2 * m - 1),
                                   rtol=1e-5)
        assert int(sbn.num_batches_tracked) == 1


def test_convert_sync_batchnorm_keeps_parameters_buffers_and_mode():
    fl.manual_seed(0)
    model = fl.Sequential(fl.Linear(4, 3), fl.BatchNorm1d(3, momentum=None),
                          fl.Sequential(fl.BatchNorm(3, affine=False)), fl.ReLU())
    model[1].running_mean[...] = 2.0
    model.eval()
    params = list(model.parameters())
    keys = list(model.state_dict())
    opt = fl.SGD(model.parameters(), lr=0.1)
    out = fl.SyncBatchNorm.convert_sync_batchnorm(model)
    assert out is model
    assert isinstance(model[1], fl.SyncBatchNorm) and isinstance(model[2][0], fl.SyncBatchNorm)
    assert list(model.parameters()) == params and list(model.state_dict()) == keys
    assert model[1].momentum is None and model[2][0].affine is False
    assert not model[1].training and model[1].running_mean[0] == 2.0
    assert opt.param_groups[0]["params"][2] is model[1].weight
    bare = fl.BatchNorm2d(5)
    converted = fl.SyncBatchNorm.convert_sync_batchnorm(bare)
    assert isinstance(converted, fl.SyncBatchNorm) and converted.weight is bare.weight
    assert converted.running_var is bare.running_var


def test_sync_batchnorm_loads_batchnorm_state_and_checks_input():
    bn = fl.BatchNorm2d(3)
    bn.running_mean[...] = 1.5
    sbn = fl.SyncBatchNorm(3)
    sbn.load_state_dict(bn.state_dict())
    assert sbn.running_mean[0] == 1.5
    with pytest.raises(ValueError, match="channels"):
        sbn(np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fl.SyncBatchNorm(3)(np.zeros((1, 3), np.float32))
    # over 2 ranks one sample each is 2 values a channel
    two = fl.SyncBatchNorm(3, process_group=TwinGroup())
    assert two(np.ones((1, 3), np.float32)).shape == (1, 3)


# ------------------------------------------------------------------------------ bias before norm

def test_bias_before_a_batch_statistics_norm_gets_exactly_zero_gradient():
    rng = np.random.default_rng(2)
    for model, x in (
            (fl.Sequential(fl.Linear(6, 5), fl.BatchNorm1d(5), fl.ReLU(), fl.Linear(5, 2)),
             rng.standard_normal((9, 6))),
            (fl.Sequential(fl.Conv2d(2, 3, 3, padding=1), fl.BatchNorm2d(3), fl.ReLU(),
                           fl.Conv2d(3, 3, 3), fl.BatchNorm2d(3)),
             rng.standard_normal((3, 2, 6, 6)))):
        x = x.astype(np.float32)
        y = model(x)
        model.backward(np.ones_like(y) + rng.standard_normal(y.shape).astype(np.float32))
        biased = [m for m in model if isinstance(m, (fl.Linear, fl.Conv2d))]
        assert np.all(biased[0].bias.grad == 0)
        assert np.any(biased[-1].bias.grad != 0) or isinstance(model[-1], fl.BatchNorm2d)
        assert np.any(biased[0].weight.grad != 0)
        model.eval()   # running statistics: the bias matters, and gets its gradient
        model.zero_grad()
        y = model(x)
        model.backward(np.ones_like(y))
        assert np.any(biased[0].bias.grad != 0)


def test_bias_gradient_before_a_norm_of_3d_linear_output_is_kept():
    # Linear on (N, L, F) input: its bias is per F, BatchNorm1d's channels are L
    model = fl.Sequential(fl.Linear(4, 4), fl.BatchNorm1d(4))
    x = np.random.default_rng(3).standard_normal((5, 4, 4)).astype(np.float32)
    y = model(x)
    model.backward(np.random.default_rng(4).standard_normal(y.shape).astype(np.float32))
    assert np.any(np.abs(model[0].bias.grad) > 1e-3)


# ------------------------------------------------------------------------------ gradients

@needs_mpi4py
def test_gradient_reducer_averages_buckets_and_follows_rebound_gradients():
    from fastlayers.distributed import GradientReducer

    class OtherRank(TwinGroup):
        """Two ranks; the other's flat gradient is ``other``."""
        def __init__(self, other):
            super().__init__(2)
            self.other = other

        def allreduce_(self, a, op="sum"):
            self.calls.append(a.size)
            a += self.other[:a.size]
            self.other = self.other[a.size:]
            return a

    ps = [fl.Parameter(np.zeros(s, np.float32)) for s in ((3, 2), (4,), (5,))]
    ps.append(fl.Parameter(np.zeros(2, np.float64)))
    mine = [np.full(p.shape, i + 1.0, p.dtype) for i, p in enumerate(ps)]
    other = [np.full(p.shape, 10.0 * (i + 1), p.dtype) for i, p in enumerate(ps)]
    for as_view in (False, True):
        reducer = GradientReducer(ps, bucket_cap_mb=24 / 2**20, gradient_as_bucket_view=as_view)
        # 24-byte buckets: each float32 gradient alone (24, 16 and 20 bytes), float64 apart
        assert [len(b.params) for b in reducer.buckets] == [1, 1, 1, 1]
        for p, g in zip(ps, mine):
            if as_view:
                assert p.grad.base is not None
                p.grad[...] = g
            else:
                p.grad = g.copy()
        user = ps[1].grad = mine[1].copy()            # rebound: copied in and back out
        ps[2].grad = None                             # None: counts as zeros
        # the buckets in their order: float32 ones ("<f4"), then float64
        group = OtherRank(np.concatenate([other[i].ravel().astype(np.float64) for i in range(4)]))
        reducer.reduce(group)
        assert group.calls == [6, 4, 5, 2]
        np.testing.assert_array_equal(ps[0].grad, (mine[0] + other[0]) / 2)
        assert ps[1].grad is user
        np.testing.assert_array_equal(user, (mine[1] + other[1]) / 2)
        np.testing.assert_array_equal(ps[2].grad, other[2] / 2)
        np.testing.assert_array_equal(ps[3].grad, (mine[3] + other[3]) / 2)
        assert ps[3].grad.dtype == np.float64
