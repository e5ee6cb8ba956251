"""The default process group of :mod:`fastlayers.distributed`, kept here so that the layers and
samplers that use it (SyncBatchNorm, DistributedSampler) find it without importing mpi4py.

A group is any object with ``rank`` and ``size`` and the collectives ``allreduce_(array)`` (sum,
in place), ``allgather(array)`` (a (size, ...) array of every rank's ``array``, in rank order) and
``broadcast_(array, src)``; :class:`fastlayers.distributed.ProcessGroup` is the MPI one.
"""
_default = [None]


def get_default():
    """The group ``fastlayers.distributed.init()`` made, or None (a single process)."""
    return _default[0]


def set_default(group):
    _default[0] = group


def resolve(group):
    """``group``, else the default group; None when that has a single rank (nothing to sync)."""
    group = group if group is not None else _default[0]
    return group if group is not None and group.size > 1 else None
