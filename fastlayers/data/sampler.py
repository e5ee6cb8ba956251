"""DistributedSampler: each data-parallel rank's disjoint share of every epoch
(``torch.utils.data.distributed.DistributedSampler``)."""
import math
from collections.abc import Sized

import numpy as np

from fastlayers import _checks, _process_group
from fastlayers.random import generator

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """The indices of one rank's share of an epoch, for ``DataLoader(..., sampler=...)``.

    Every rank orders the same ``len(dataset)`` indices the same way (a permutation when
    ``shuffle``), pads them to a multiple of ``num_replicas`` with the first ones (or, with
    ``drop_last``, cuts the tail) and takes every ``num_replicas``-th, starting at ``rank``: rank
    r gets positions r, r + N, r + 2N, ... So with a per-rank ``batch_size`` b, the i-th batches of
    the N ranks are together positions iNb ... (i + 1)Nb - 1 of the order, the i-th global batch
    of N b samples that one process with ``batch_size`` N b would take, each rank holding a
    disjoint share of it (position r + N t is sample t of rank r: the layout
    :func:`fastlayers.random.sample_placement` gives dropout after ``fastlayers.distributed.init``).

    Args:
        dataset: the number of samples, or anything with a ``len()`` (an array, a dataset).
        num_replicas: the number of ranks N; default: the world size of
            ``fastlayers.distributed.init()``.
        rank: this rank, in [0, N); default: this process's rank.
        shuffle: a new permutation every epoch (default True); else the order 0, 1, 2, ...
        seed: the permutation of epoch e is drawn from a generator seeded with (seed, e), the same
            on every rank; call :meth:`set_epoch` before each epoch (as in PyTorch). ``None``: drawn
            from ``fastlayers.manual_seed``'s generator when iteration starts, as
            ``DataLoader(shuffle=True)`` draws its permutation, so N ranks seeded alike see the
            order one process sees.
        drop_last: drop the tail that does not divide evenly (default False: pad with repeated
            samples, so every rank has ``len(self)`` samples).

    The samples of the last global batch, and the padding, are as PyTorch's: one process and N
    ranks see the same global batches when ``len(dataset)`` is a multiple of N.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        owner = "DistributedSampler"
        if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool):
            n = _checks.integer(f"{owner}: dataset (a length)", dataset, 0)
        elif isinstance(dataset, Sized):
            n = len(dataset)
        else:
            raise TypeError(f"{owner}: dataset must be a number of samples or have a len(), got "
                            f"{type(dataset).__name__}")
        if num_replicas is None or rank is None:
            group = _process_group.get_default()
            if group is None:
                raise RuntimeError(f"{owner}: fastlayers.distributed is not initialised: call "
                                   f"fastlayers.distributed.init() first, or pass num_replicas "
                                   f"and rank")
            num_replicas = group.size if num_replicas is None else num_replicas
            rank = group.rank if rank is None else rank
        self.num_replicas = _checks.integer(f"{owner}: num_replicas", num_replicas, 1)
        rank = _checks.integer(f"{owner}: rank", rank, 0)
        if rank >= self.num_replicas:
            raise ValueError(f"{owner}: Invalid rank {rank}, rank should be in the interval "
                             f"[0, {self.num_replicas - 1}]")
        self.rank = rank
        for flag, value in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{owner}: {flag} must be True or False, got {value!r}")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = None if seed is None else _checks.integer(f"{owner}: seed", seed, 0)
        self.dataset_size = n
        if self.drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0

    def set_epoch(self, epoch):
        """The epoch whose permutation the next iteration draws (with an integer ``seed``)."""
        self.epoch = _checks.integer("DistributedSampler: epoch", epoch, 0)

    def indices(self):
        """This rank's indices for the epoch, as an int64 array (drawn now)."""
        n = self.dataset_size
        if not self.shuffle:
            order = np.arange(n, dtype=np.int64)
        elif self.seed is None:
            order = generator().permutation(n).astype(np.int64, copy=False)
        else:
            rng = np.random.default_rng(np.random.SeedSequence((self.seed, self.epoch)))
            order = rng.permutation(n).astype(np.int64, copy=False)
        if self.total_size > n:
            order = np.resize(order, self.total_size)   # repeats from the start, as PyTorch pads
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(dataset_size={self.dataset_size}, "
                f"num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last})")
