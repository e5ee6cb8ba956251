"""Batch normalisation: BatchNorm1d, BatchNorm2d, the notebooks' BatchNorm (2-D or 4-D input),
and SyncBatchNorm (statistics over the global batch of all data-parallel ranks).

Each normalises every channel by its batch statistics in training and by running statistics in
evaluation, then applies a learned per-channel scale and shift. Inside a :class:`Sequential`, a
following ReLU or LeakyReLU (and a MaxPool2d(2) after it) runs in the same step: see
:mod:`fastlayers.fused`.
"""
import numpy as np

from fastlayers import _checks, _process_group, backend
from fastlayers.module import Module, Parameter
from kernels.activations import IDENTITY


class _BatchNorm(Module):
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        self.num_features = _checks.integer("num_features", num_features, 1)
        self.eps = _checks.real("eps", eps, low=0.0, low_open=True)
        if momentum is not None:
            momentum = _checks.real("momentum", momentum, low=0.0, high=1.0)
        self.momentum = momentum
        self.affine = _checks.boolean("affine", affine)
        self.track_running_stats = _checks.boolean("track_running_stats", track_running_stats)
        dtype = _checks.float_dtype(dtype)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype)) if affine else None
        self.bias = Parameter(np.zeros(c, dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype))
            self.register_buffer("running_var", np.ones(c, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self._cache = None

    def reset_running_stats(self):
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.fill(0)
            self.running_var.fill(1)
            self.num_batches_tracked[...] = 0

    @property
    def dtype(self):
        """The dtype inputs must have: the parameters' (or running statistics'), None if neither."""
        if self.weight is not None:
            return self.weight.dtype
        return self.running_mean.dtype if self.running_mean is not None else None

    def uses_batch_stats(self):
        """Whether a forward normalises with the batch's own statistics (training, or no running
        statistics)."""
        return self.training or self.running_mean is None

    def affine_arrays(self, dtype):
        """(gamma, beta), the per-channel scale and shift (ones and zeros when not ``affine``)."""
        if self.weight is not None:
            return self.weight.data, self.bias.data
        c = self.num_features
        return np.ones(c, dtype), np.zeros(c, dtype)

    def affine_grads(self, gamma):
        """The arrays a backward adds the scale and shift gradients into (scratch when not
        ``affine``)."""
        if self.weight is not None:
            return self.weight.grad_buffer(), self.bias.grad_buffer()
        return np.zeros_like(gamma), np.zeros_like(gamma)

    def count_batch(self, dtype):
        """For a forward with batch statistics, once its input is checked: counts the batch when
        training with running statistics, and returns what the kernels take, (momentum factor,
        running_mean, running_var), with zero-length arrays when the running statistics are not
        updated."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked[...] += 1
            n = int(self.num_batches_tracked)
            factor = 1.0 / n if self.momentum is None else self.momentum
            return factor, self.running_mean, self.running_var
        return 0.0, np.empty(0, dtype), np.empty(0, dtype)

    def check_batch(self, shape):
        """ValueError if a batch-statistics forward of an input of ``shape`` would see only one
        value per channel."""
        if self.uses_batch_stats() and int(np.prod(shape)) // self.num_features <= 1:
            raise ValueError(f"{type(self).__name__}: Expected more than 1 value per channel when "
                             f"training, got input size {tuple(shape)}")

    def check_input(self, x):
        """``x`` checked (dtype, dimensions, channels) and C-contiguous."""
        owner = type(self).__name__
        x = _checks.float_array(x, "input", ndim=self._ndims, dtype=self.dtype, owner=owner)
        _checks.dim_size(x, 1, self.num_features, what="channels", owner=owner)
        return x

    def normalize(self, x, act=IDENTITY, slope=0.0):
        """Normalise ``x`` (checked by :meth:`check_input`) and apply the activation ``act`` (a
        code of ``kernels.batchnorm.FUSED_ACTS``) in the same pass; updates the running statistics
        when training. Returns the output and what :meth:`normalize_backward` needs."""
        self.check_batch(x.shape)
        ops = backend.ops()
        gamma, beta = self.affine_arrays(x.dtype)
        batch_stats = self.uses_batch_stats()
        if batch_stats:
            factor, rm, rv = self.count_batch(x.dtype)
            y, mean, invstd = ops.batchnorm_train_forward(x, gamma, beta, rm, rv, factor, self.eps,
                                                          act, slope)
        else:
            y, mean, invstd = ops.batchnorm_eval_forward(x, gamma, beta, self.running_mean,
                                                         self.running_var, self.eps, act, slope)
        return y, (x, y, mean, invstd, act, slope, batch_stats)

    def normalize_backward(self, saved, grad_output):
        """The input gradient (None unless ``needs_input_grad``) of a :meth:`normalize` call that
        returned ``saved``; adds the scale and shift gradients."""
        owner = type(self).__name__
        x, y, mean, invstd, act, slope, batch_stats = saved
        g = _checks.float_array(grad_output, "grad_output", dtype=x.dtype, owner=owner)
        if g.shape != y.shape:
            raise ValueError(f"{owner}: grad_output must have shape {y.shape}, got {g.shape}")
        gamma, _ = self.affine_arrays(x.dtype)
        dgamma, dbeta = self.affine_grads(gamma)
        return backend.ops().batchnorm_backward(g, x, y, gamma, mean, invstd, act, slope,
                                                batch_stats, dgamma, dbeta, self.needs_input_grad)

    def forward(self, x):
        y, self._cache = self.normalize(self.check_input(x))
        return y

    def backward(self, grad_output):
        return self.normalize_backward(self._saved(), grad_output)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over a 2-D (N, C) or 3-D (N, C, L) input, per channel C.

    y = (x - mean) / sqrt(var + eps) * weight + bias

    Args:
        num_features: C, the number of channels.
        eps: added to the variance for stability (default 1e-5).
        momentum: weight of the current batch in the running statistics, running = (1 - momentum)
            * running + momentum * batch (default 0.1); None for a cumulative moving average.
        affine: learn ``weight`` (ones at first) and ``bias`` (zeros) (default True).
        track_running_stats: keep ``running_mean``, ``running_var`` and ``num_batches_tracked``
            buffers and normalise with them in eval mode (default True); without them, eval mode
            uses the batch statistics too.
        dtype: float32 (default) or float64.

    In training the batch variance is the biased one (divided by N*L); ``running_var`` is updated
    with the unbiased one, as PyTorch does. Training needs more than one value per channel.

    Shape: input (N, C) or (N, C, L); output as input.

    Example::

        >>> bn = fastlayers.BatchNorm1d(128)
        >>> bn(np.random.rand(64, 128).astype(np.float32)).shape
        (64, 128)
    """
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over a 4-D (N, C, H, W) input, per channel C (statistics over N, H, W).

    Args and semantics as :class:`BatchNorm1d`.

    Shape: input (N, C, H, W); output as input.

    Example::

        >>> bn = fastlayers.BatchNorm2d(16)
        >>> bn(np.random.rand(8, 16, 14, 14).astype(np.float32)).shape
        (8, 16, 14, 14)
    """
    _ndims = (4,)


class BatchNorm(_BatchNorm):
    """The notebooks' batch normalisation: :class:`BatchNorm1d` for a 2-D (N, C) input and
    :class:`BatchNorm2d` for a 4-D (N, C, H, W) input, with the same arguments."""
    _ndims = (2, 4)


def _combine(gathered, c):
    """(count, mean, m2) of the union of the ranks' batches from their rows of (count, mean (C),
    m2 (C)), combined in rank order (Chan et al.'s pairwise update), so every rank gets the same
    bits whatever the MPI library's reduction order."""
    n = 0.0
    mean = np.zeros(c)
    m2 = np.zeros(c)
    for row in gathered:
        cnt = row[0]
        if cnt == 0:
            continue
        total = n + cnt
        delta = row[1:c + 1] - mean
        mean = mean + delta * (cnt / total)
        m2 = m2 + row[c + 1:] + delta * delta * (n * cnt / total)
        n = total
    return n, mean, m2


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation whose training statistics are those of the global batch: the union of
    every data-parallel rank's batch (``torch.nn.SyncBatchNorm``).

    In training each forward gathers every rank's per-channel count, mean and sum of squared
    deviations (one collective per layer) and combines them in rank order, so all ranks normalise
    with the same mean and variance and update the same running statistics; each backward sums
    the per-channel sums of the gradient over the ranks (one allreduce per layer) for the input
    gradient. With one rank, with no process group (``fastlayers.distributed`` not initialised),
    or in evaluation with running statistics it is exactly a batch norm of the local batch.
    ``weight`` and ``bias`` gradients stay local: the data-parallel wrapper averages them with the
    others. Its state dict has BatchNorm's keys, so a model trained with it loads into one with
    BatchNorm1d/BatchNorm2d (and into PyTorch).

    Args: as :class:`BatchNorm1d`, and
        process_group: the :class:`fastlayers.distributed.ProcessGroup` to synchronise over;
            default: the one ``fastlayers.distributed.init()`` made.

    Shape: input (N, C), (N, C, L) or (N, C, H, W); output as input. Every rank must call forward
    and backward the same number of times (they are collective).

    :meth:`convert_sync_batchnorm` turns the batch norms of a model into SyncBatchNorm.
    """
    _ndims = (2, 3, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self.process_group = process_group

    def synced_group(self):
        """The group a forward now synchronises over (batch statistics and more than one rank),
        or None when it normalises the local batch as a plain batch norm does."""
        return _process_group.resolve(self.process_group) if self.uses_batch_stats() else None

    def check_batch(self, shape):
        group = self.synced_group()
        if group is None:
            return super().check_batch(shape)
        if int(np.prod(shape)) // self.num_features * group.size <= 1:
            raise ValueError(f"SyncBatchNorm: Expected more than 1 value per channel when "
                             f"training, got input size {tuple(shape)} on {group.size} ranks")

    def global_statistics(self, count, mean, m2):
        """The global batch's (mean, invstd, count) from this rank's ``count`` values a channel,
        their ``mean`` and sum of squared deviations ``m2`` (float64 (C,)), with every rank's
        (one allgather, combined in rank order); counts the batch and updates the running
        statistics, as a training forward does. Collective: for the fused steps and
        :meth:`normalize`."""
        c = self.num_features
        rows = self.synced_group().allgather(np.concatenate(([float(count)], mean, m2)))
        total, mean, m2 = _combine(rows, c)
        var = m2 / total
        factor, rm, rv = self.count_batch(self.dtype or np.float32)
        if rm.size:   # as kernels/_loops.py's channel_stats, in float64
            unbiased = var * (total / (total - 1.0)) if total > 1 else var
            rm[...] = (1.0 - factor) * rm.astype(np.float64) + factor * mean
            rv[...] = (1.0 - factor) * rv.astype(np.float64) + factor * unbiased
        return mean, 1.0 / np.sqrt(var + self.eps), total

    def global_sums(self, sum_g, sum_gx):
        """``sum_g`` and ``sum_gx`` (float64 (C,)) summed over the ranks (one allreduce)."""
        sums = np.concatenate((sum_g, sum_gx))
        self.synced_group().allreduce_(sums)
        c = self.num_features
        return sums[:c], sums[c:]

    def normalize(self, x, act=IDENTITY, slope=0.0):
        group = self.synced_group()
        if group is None:
            return super().normalize(x, act, slope)
        self.check_batch(x.shape)
        ops = backend.ops()
        c = self.num_features
        count = x.size // c
        mean, m2 = ops.batchnorm_stats(x) if count else (np.zeros(c), np.zeros(c))
        mean, invstd, total = self.global_statistics(count, mean, m2)
        gamma, beta = self.affine_arrays(x.dtype)
        y = ops.batchnorm_apply_forward(x, gamma, beta, mean, invstd, act, slope)
        return y, (x, y, mean, invstd, act, slope, True, total)

    def normalize_backward(self, saved, grad_output):
        if len(saved) == 7:    # local statistics (see normalize)
            return super().normalize_backward(saved, grad_output)
        x, y, mean, invstd, act, slope, _, total = saved
        g = _checks.float_array(grad_output, "grad_output", dtype=x.dtype, owner="SyncBatchNorm")
        if g.shape != y.shape:
            raise ValueError(f"SyncBatchNorm: grad_output must have shape {y.shape}, got "
                             f"{g.shape}")
        ops = backend.ops()
        gamma, _ = self.affine_arrays(x.dtype)
        dgamma, dbeta = self.affine_grads(gamma)
        sum_g, sum_gx = ops.batchnorm_grad_sums(g, x, y, mean, invstd, act, slope)
        dgamma += sum_gx.astype(dgamma.dtype)
        dbeta += sum_g.astype(dbeta.dtype)
        if not self.needs_input_grad:
            return None
        sum_g, sum_gx = self.global_sums(sum_g, sum_gx)
        return ops.batchnorm_input_grad(g, x, y, gamma, mean, invstd, act, slope, sum_g / total,
                                        sum_gx / total)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm1d, BatchNorm2d and BatchNorm in it replaced by a
        SyncBatchNorm that holds the same ``weight`` and ``bias`` Parameters and the same running
        statistics (so an optimizer made before keeps training them), in the same mode. Children
        are replaced in place; a batch norm given itself returns its replacement
        (``torch.nn.SyncBatchNorm.convert_sync_batchnorm``)."""
        if isinstance(module, (BatchNorm1d, BatchNorm2d, BatchNorm)):
            new = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group,
                      dtype=module.dtype or np.float32)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(new, name, getattr(module, name))
            object.__setattr__(new, "training", module.training)
            if "needs_input_grad" in module.__dict__:
                new.needs_input_grad = module.needs_input_grad
            return new
        for name, child in list(module._modules.items()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                setattr(module, name, converted)
        return module

    def extra_repr(self):
        return super().extra_repr() + (", process_group=..." if self.process_group is not None
                                       else "")
