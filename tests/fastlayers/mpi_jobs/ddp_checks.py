"""Checks of fastlayers.distributed run on every rank of one MPI job (tests/fastlayers/
test_distributed_mpi.py launches it under mpiexec). Each check raises on failure, which aborts the
job; rank 0 prints "ok <check> <detail>" lines.

The single-process references run in the same processes, from the same seeds, with the dropout
placement of one process, (0, 1), and with the random state put back between the two runs.
"""
import sys

import numpy as np

import fastlayers as fl
import fastlayers.distributed as dist
from fastlayers import random

group = dist.init(timeout=300)
R, N = dist.get_rank(), dist.get_world_size()
B = 8 * N   # global batch
FEATURES = 12


def say(*parts):
    if R == 0:
        print(*parts, flush=True)


def data(seed, steps, shape=(FEATURES,)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, B) + shape).astype(np.float32)
    y = rng.integers(0, 5, (steps, B))
    return x, y


def flat_weights(model):
    return np.concatenate([p.data.ravel() for p in model.parameters()])


def mlp(bn, p_drop):
    layers = [fl.Linear(FEATURES, 16)]
    layers += [fl.BatchNorm1d(16)] if bn else []
    layers += [fl.ReLU(), fl.Dropout(p_drop), fl.Linear(16, 5)]
    return fl.Sequential(*layers)


def cnn():
    # the speed-run cnn's layout, small: a first ConvBlock, then a NormActivationPool block
    return fl.Sequential(fl.Conv2d(1, 4, 3, padding=1), fl.BatchNorm2d(4), fl.ReLU(),
                         fl.MaxPool2d(2), fl.Conv2d(4, 6, 3, padding=1), fl.BatchNorm2d(6),
                         fl.ReLU(), fl.MaxPool2d(2), fl.Flatten(), fl.Linear(6 * 2 * 2, 5))


def step(model, loss_fn, opt, x, y):
    loss = loss_fn(model(x), y)
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
    return loss


def train_ddp(build, x, y, opt_cls, sync_bn, **ddp):
    """The rank's run: its shard of every global batch; replicas compared after every step."""
    fl.manual_seed(1)
    model = build()
    model[0].needs_input_grad = False
    if sync_bn:
        model = fl.SyncBatchNorm.convert_sync_batchnorm(model)
    model = dist.DistributedDataParallel(model, **ddp)
    opt = opt_cls(model.parameters(), lr=0.05)
    loss_fn = fl.CrossEntropyLoss()
    for xs, ys in zip(x, y):
        step(model, loss_fn, opt, xs[R::N].copy(), ys[R::N].copy())
        dist.check_replicas(model)
    return model.module


def train_single(build, x, y, opt_cls):
    """One process with the global batch, as a single process places its dropout masks."""
    saved = random.sample_placement()
    random.set_sample_placement(0, 1)
    try:
        fl.manual_seed(1)
        model = build()
        model[0].needs_input_grad = False
        opt = opt_cls(model.parameters(), lr=0.05)
        loss_fn = fl.CrossEntropyLoss()
        for xs, ys in zip(x, y):
            step(model, loss_fn, opt, xs, ys)
        return model
    finally:
        random.set_sample_placement(*saved)


def check_against_one_process():
    # N ranks with global batch B against one process with batch B: SyncBatchNorm, dropout and
    # Adam (mlp), SGD with the conv block (cnn); up to float rounding.
    for name, build, shape, opt_cls in (
            ("mlp-syncbn-dropout-adam", lambda: mlp(True, 0.3), (FEATURES,), fl.Adam),
            ("cnn-syncbn-sgd", cnn, (1, 8, 8), fl.SGD)):
        x, y = data(3, 6, shape)
        ddp = train_ddp(build, x, y, opt_cls, True, gradient_as_bucket_view=True)
        fused = [len(s) for s in ddp.steps]       # SyncBatchNorm fuses as BatchNorm does
        ref = train_single(build, x, y, opt_cls)
        assert fused == [len(s) for s in ref.steps], (name, ddp.steps)
        a, b = flat_weights(ddp), flat_weights(ref)
        diff = float(np.max(np.abs(a - b)))
        assert diff <= 2e-5, (name, diff)
        for (k, u), (k2, v) in zip(sorted(ddp.state_dict().items()),
                                   sorted(ref.state_dict().items())):
            assert k == k2
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5, err_msg=f"{name} {k}")
        say("ok one-process", name, f"max|dw|={diff:.2e}")


def check_bitwise_fixed_order():
    # Without batch norm every rank's gradient is that of its shard alone; a single process that
    # computes the shards' gradients one by one (same dropout keys and placements) and adds them
    # in rank order takes bitwise the steps the ranks take (for 2 ranks the allreduce's sum is
    # that order whatever the algorithm: float addition commutes).
    x, y = data(5, 5)
    ddp = train_ddp(lambda: mlp(False, 0.5), x, y, fl.SGD, False)
    saved = random.sample_placement()
    fl.manual_seed(1)
    model = mlp(False, 0.5)
    model[0].needs_input_grad = False
    params = list(model.parameters())
    opt = fl.SGD(params, lr=0.05)
    loss_fn = fl.CrossEntropyLoss()
    try:
        for xs, ys in zip(x, y):
            start = random.get_counter()
            total = None
            for r in range(N):
                random.set_counter(start)
                random.set_sample_placement(r, N)
                opt.zero_grad()
                loss_fn(model(xs[r::N].copy()), ys[r::N].copy())
                model.backward(loss_fn.backward())
                grads = [p.grad.copy() for p in params]
                total = grads if total is None else [t + g for t, g in zip(total, grads)]
            for p, t in zip(params, total):
                p.grad[...] = t / p.dtype.type(N)
            opt.step()
    finally:
        random.set_sample_placement(*saved)
    assert np.array_equal(flat_weights(ddp), flat_weights(model)), \
        float(np.max(np.abs(flat_weights(ddp) - flat_weights(model))))
    say("ok bitwise-fixed-order")


def check_sync_batchnorm_layer():
    # One SyncBatchNorm (fused with ReLU in a Sequential) on the rank's shard against BatchNorm on
    # the whole batch: outputs, input gradients, the summed affine gradients, running statistics.
    for shape in ((B, 6), (B, 3, 5, 4)):
        rng = np.random.default_rng(7)
        x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        kind = fl.BatchNorm1d if len(shape) == 2 else fl.BatchNorm2d
        ref = fl.Sequential(kind(shape[1]), fl.ReLU())
        y_ref = ref(x)
        dx_ref = ref.backward(g)
        sync = fl.SyncBatchNorm.convert_sync_batchnorm(fl.Sequential(kind(shape[1]), fl.ReLU()))
        assert isinstance(sync[0], fl.SyncBatchNorm)
        y = sync(x[R::N].copy())
        assert [type(s[0]).__name__ for s in sync.steps] == ["SyncBatchNorm"]
        assert len(sync.steps[0]) == 2          # fused with its ReLU
        dx = sync.backward(g[R::N].copy())
        np.testing.assert_allclose(y, y_ref[R::N], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx, dx_ref[R::N], rtol=1e-4, atol=1e-5)
        dw = np.concatenate([sync[0].weight.grad, sync[0].bias.grad]).astype(np.float64)
        dist.all_reduce(dw)
        np.testing.assert_allclose(dw, np.concatenate([ref[0].weight.grad, ref[0].bias.grad]),
                                   rtol=1e-4, atol=1e-5)
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(sync[0], name), getattr(ref[0], name), rtol=1e-6,
                                       atol=1e-6)
        assert int(sync[0].num_batches_tracked) == 1
    say("ok sync-batchnorm-layer")


def check_sampler_and_init_sync():
    sampler = dist.DistributedSampler(23, seed=4)
    sampler.set_epoch(2)
    shards = dist.all_gather(sampler.indices())
    assert shards.shape == (N, 12 if N == 2 else -(-23 // N))
    everything = np.sort(shards.ravel())
    assert set(everything.tolist()) == set(range(23))
    # seed None: the order of fastlayers' generator, the same on every rank
    fl.manual_seed(9)
    mine = dist.DistributedSampler(20, seed=None).indices()
    fl.manual_seed(9)
    np.testing.assert_array_equal(mine, fl.random.generator().permutation(20)[R::N])
    # parameters seeded differently on each rank become rank 0's
    fl.manual_seed(100 + R)
    model = dist.DistributedDataParallel(mlp(True, 0.0))
    dist.check_replicas(model)
    say("ok sampler-and-init-sync")


def check_no_sync_accumulates():
    # Two backwards under no_sync, then one outside: the gradients are the ranks' average of their
    # three-batch sums (a plain copy of the model gives each rank's sum).
    x, y = data(11, 3)
    loss_fn = fl.CrossEntropyLoss()
    fl.manual_seed(2)
    plain = mlp(False, 0.0)
    plain.zero_grad()
    for i in range(3):
        loss_fn(plain(x[i, R::N].copy()), y[i, R::N].copy())
        plain.backward(loss_fn.backward())
    local = np.concatenate([p.grad.ravel() for p in plain.parameters()])
    fl.manual_seed(2)
    model = dist.DistributedDataParallel(mlp(False, 0.0))
    model.zero_grad()
    with model.no_sync():
        for i in range(2):
            loss_fn(model(x[i, R::N].copy()), y[i, R::N].copy())
            model.backward(loss_fn.backward())
    unsynced = np.concatenate([p.grad.ravel() for p in model.parameters()])
    loss_fn(model(x[2, R::N].copy()), y[2, R::N].copy())
    model.backward(loss_fn.backward())
    synced = np.concatenate([p.grad.ravel() for p in model.parameters()])
    everyone = dist.all_gather(local)
    assert not np.allclose(unsynced, synced)
    np.testing.assert_allclose(synced, everyone.sum(axis=0) / np.float32(N), rtol=1e-6, atol=1e-7)
    dist.check_replicas(model)
    say("ok no-sync")


check_against_one_process()
check_bitwise_fixed_order()
check_sync_batchnorm_layer()
check_sampler_and_init_sync()
check_no_sync_accumulates()
stats = dist.communication_stats()
assert stats["calls"] > 0 and stats["seconds"] > 0
# the split of the collectives' time: the same communication figure on every rank
group.start_recording()
for _ in range(3):
    dist.all_reduce(np.ones(1000, np.float32))
comm, wait = group.split_time()
both = dist.all_gather(np.array([comm, wait]))
assert np.all(both[:, 0] == both[0, 0]) and np.all(both >= 0), both
say("ok all", f"ranks={N}", f"collectives={stats['calls']}")
sys.stdout.flush()
