"""Batch normalisation: BatchNorm1d, BatchNorm2d, and the notebooks' BatchNorm (2-D or 4-D input).

Each normalises every channel by its batch statistics in training and by running statistics in
evaluation, then applies a learned per-channel scale and shift. Inside a :class:`Sequential`, a
following ReLU or LeakyReLU is fused into the normalise pass and its derivative into the backward
pass (other activations run after it through their own kernels). In training, BatchNorm2d, ReLU
(or LeakyReLU) and MaxPool2d(2) in a row run as one step that never writes the full-size
activation (see kernels/batchnorm.py).
"""
import numpy as np

from fastlayers import _checks, backend
from fastlayers.module import Module, Parameter
from fastlayers.pooling import MaxPool2d
from kernels.activations import IDENTITY
from kernels.batchnorm import FUSED_ACTS, negative_scale


class _BatchNorm(Module):
    fuses_activation = True
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        self.num_features = _checks.integer("num_features", num_features, 1)
        self.eps = _checks.real("eps", eps, low=0.0, low_open=True)
        if momentum is not None:
            momentum = _checks.real("momentum", momentum, low=0.0, high=1.0)
        self.momentum = momentum
        for name, flag in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.affine = affine
        self.track_running_stats = track_running_stats
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

    def _dtype(self):
        """The dtype inputs must have: the parameters' (or running statistics'), None if neither."""
        if self.weight is not None:
            return self.weight.dtype
        return self.running_mean.dtype if self.running_mean is not None else None

    def _affine(self, dtype):
        if self.weight is not None:
            return self.weight.data, self.bias.data
        c = self.num_features
        return np.ones(c, dtype), np.zeros(c, dtype)

    def _affine_grads(self, gamma):
        """The arrays a backward adds the scale and shift gradients into (scratch when not
        ``affine``)."""
        if self.weight is not None:
            return self.weight.grad_buffer(), self.bias.grad_buffer()
        return np.zeros_like(gamma), np.zeros_like(gamma)

    def _batch_stats(self):
        """Whether a forward normalises with the batch's own statistics."""
        return self.training or self.running_mean is None

    def _running_update(self, dtype):
        """For a forward with batch statistics: counts the batch when training with running
        statistics, and returns what the kernels take, (momentum factor, running_mean,
        running_var), with zero-length arrays when the running statistics are not updated."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked[...] += 1
            n = int(self.num_batches_tracked)
            factor = 1.0 / n if self.momentum is None else self.momentum
            return factor, self.running_mean, self.running_var
        return 0.0, np.empty(0, dtype), np.empty(0, dtype)

    def _check_batch(self, shape, owner):
        """A batch-statistics forward needs more than one value per channel (input ``shape``)."""
        if self._batch_stats() and int(np.prod(shape)) // self.num_features <= 1:
            raise ValueError(f"{owner}: Expected more than 1 value per channel when training, "
                             f"got input size {tuple(shape)}")

    def fuses_pool(self, activation, pool):
        """Whether ``self, activation, pool`` can run as one fused step (see the module docstring):
        a 4-D layer using batch statistics, a ReLU, LeakyReLU (slope >= 0) or no-op activation, and
        a 2x2 max pool with stride 2 and no padding."""
        act = getattr(activation, "act", None)
        return (self._ndims == (4,) and self._batch_stats() and act in FUSED_ACTS
                and negative_scale(act, getattr(activation, "slope", 0.0)) >= 0
                and type(pool) is MaxPool2d and pool.kernel_size == (2, 2)
                and pool.stride == (2, 2) and pool.padding == (0, 0))

    def forward(self, x, activation=None, pool=None):
        """Normalise ``x``; ``activation`` (a module with ``act`` and ``slope``, e.g. a ReLU) is
        applied to the result, fused when it is ReLU or LeakyReLU; ``pool``, a MaxPool2d(2) for
        which :meth:`fuses_pool` holds, then pools it in the same step."""
        owner = type(self).__name__
        x = _checks.float_array(x, "input", ndim=self._ndims, dtype=self._dtype(), owner=owner)
        _checks.dim_size(x, 1, self.num_features, what="channels", owner=owner)
        act, slope = IDENTITY, 0.0
        if activation is not None:
            act, slope = getattr(activation, "act", None), getattr(activation, "slope", 0.0)
            if act is None:
                raise TypeError(f"{owner}: activation must be an elementwise activation module "
                                f"(with an act code), got {type(activation).__name__}")
        if pool is not None:
            if not self.fuses_pool(activation, pool):
                raise ValueError(f"{owner}: cannot fuse {pool!r} after {activation!r} "
                                 f"(see fuses_pool)")
            x = pool._check_input(x)
        batch_stats = self._batch_stats()
        self._check_batch(x.shape, owner)
        ops = backend.ops()
        fused = act in FUSED_ACTS
        kact = act if fused else IDENTITY
        gamma, beta = self._affine(x.dtype)
        idx = None
        if batch_stats:
            factor, rm, rv = self._running_update(x.dtype)
            if pool is not None:
                y, idx, mean, invstd = ops.batchnorm_maxpool_train_forward(
                    x, gamma, beta, rm, rv, factor, self.eps, kact, slope)
            else:
                y, mean, invstd = ops.batchnorm_train_forward(x, gamma, beta, rm, rv, factor,
                                                              self.eps, kact, slope)
        else:
            y, mean, invstd = ops.batchnorm_eval_forward(x, gamma, beta, self.running_mean,
                                                         self.running_var, self.eps, kact, slope)
        out = y if fused else ops.activation_forward(y, act, slope)
        self._cache = (x, y, out, mean, invstd, act, slope, batch_stats, idx)
        return out

    def backward(self, grad_output):
        owner = type(self).__name__
        x, y, out, mean, invstd, act, slope, batch_stats, idx = self._saved()
        g = _checks.float_array(grad_output, "grad_output", dtype=x.dtype, owner=owner)
        if g.shape != out.shape:
            raise ValueError(f"{owner}: grad_output must have shape {out.shape}, got {g.shape}")
        ops = backend.ops()
        if act not in FUSED_ACTS:
            g = ops.activation_backward(g, out, act, slope)
            act, slope = IDENTITY, 0.0
        gamma, _ = self._affine(x.dtype)
        dgamma, dbeta = self._affine_grads(gamma)
        if idx is not None:
            dx = ops.batchnorm_maxpool_backward(g, idx, y, x, gamma, mean, invstd, act, slope,
                                                dgamma, dbeta, self.needs_input_grad)
        else:
            dx = ops.batchnorm_backward(g, x, y, gamma, mean, invstd, act, slope, batch_stats,
                                        dgamma, dbeta, self.needs_input_grad)
        return self._release(dx)

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
