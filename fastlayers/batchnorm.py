"""Batch normalisation: BatchNorm1d, BatchNorm2d, and the notebooks' BatchNorm (2-D or 4-D input).

Each normalises every channel by its batch statistics in training and by running statistics in
evaluation, then applies a learned per-channel scale and shift. Inside a :class:`Sequential`, a
following ReLU or LeakyReLU (and a MaxPool2d(2) after it) runs in the same step: see
:mod:`fastlayers.fused`.
"""
import numpy as np

from fastlayers import _checks, backend
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
