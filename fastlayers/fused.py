"""Fused steps: layers of a :class:`~fastlayers.Sequential` that run as one, and the rule that
builds them.

A Sequential asks :func:`plan` for the steps of each forward. Where one of these patterns starts,
its layers run as one step whose kernels make fewer passes over memory; every other layer is a step
of its own. Results are those of the layers run one after the other, up to float rounding.

``LinearActivation``: Linear, then any elementwise activation (ReLU, LeakyReLU, Sigmoid, Tanh,
    Hardtanh, ReLU6, GELU, SiLU, ELU, Softplus).
    The bias and the activation are one pass after the GEMM; on the way back the activation's
    derivative and the bias gradient are one pass (kernels/linear.py).
``NormActivation``: BatchNorm1d, BatchNorm2d, BatchNorm or SyncBatchNorm, then ReLU or LeakyReLU.
    The activation is applied in the normalise pass and its derivative in the backward pass. Only
    activations of the form "z if z > 0 else s z" (kernels.batchnorm.FUSED_ACTS) fold into those
    passes; any other after a batch norm runs as a step of its own.
``NormActivationPool``: BatchNorm2d or SyncBatchNorm using batch statistics (training), ReLU or
    LeakyReLU with a slope >= 0, then MaxPool2d(2) (2x2, stride 2, no padding).
    The full-size activation is never written to memory (kernels/batchnorm_pool.py). The activation
    must be non-decreasing so that pooling its output picks the input that pooling before it would.
    With running statistics (eval) the batch norm and activation fuse and the pool runs on its own.
    A SyncBatchNorm in training on several ranks runs the pass split where the ranks exchange
    their statistics (kernels/batchnorm_pool.py), as in a ConvBlock (kernels/convbn.py).
``ConvBlock``: Conv2d whose input needs no gradient (``needs_input_grad`` False: a network's first
    layer, as the training engine sets it), stride 1, one group, a numeric padding (the same on
    both sides), at most ``CONV_BLOCK_MAX_TAPS`` input values under the kernel, followed by a
    ``NormActivationPool`` pattern whose BatchNorm2d has the convolution's output channels and
    dtype.
    The convolution's output is never written, in either direction (kernels/convbn.py). The
    backward gives no input gradient, hence the first layer only; the kernel's layout assumes
    stride 1.

``BiasBeforeNorm``: a Linear (on (N, in_features) input) or Conv2d with a bias, right before a batch
    norm (any of the above, SyncBatchNorm too) that normalises with batch statistics over the
    layer's output channels.
    The layer runs as itself, but its bias gets the gradient it has: exactly zero (the batch norm
    subtracts the batch mean of every channel, so the bias cannot change its output), not the
    rounding residue of a sum that cancels, about 1e-9, which Adam divides by its own square root
    into steps of about lr in a random direction (PyTorch keeps that residue). So the bias stays
    put, as the ConvBlock's bias does, and runs that round differently (1 or 2 threads, 1 or N
    data-parallel ranks) keep the same bias.

A fused step owns its validation and its cache, and reaches the layers it replaces only through
their public attributes and methods; their own caches are left alone. A Sequential plans its steps
at every forward (taking again the fused steps of the last one that still apply), and a forward
that fails puts back the caches of the last good one.
"""
import numpy as np

from fastlayers import _checks, backend
from fastlayers.batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d, SyncBatchNorm
from fastlayers.conv import Conv2d
from fastlayers.linear import Linear
from fastlayers.module import Module
from fastlayers.pooling import MaxPool2d
from kernels.activations import NO_PARAMS
from kernels.batchnorm import FUSED_ACTS, negative_scale

# The fused first block's statistics pass costs K (K + 1) / 2 products a position for K input values
# under the kernel (C KH KW): 27 admits a 3x3 kernel over 3 channels.
CONV_BLOCK_MAX_TAPS = 27


def _act(activation, owner):
    """(act code, params) of an elementwise activation module; TypeError for any other module."""
    act = getattr(activation, "act", None)
    if act is None:
        raise TypeError(f"{owner}: activation must be an elementwise activation module (with an "
                        f"act code), got {type(activation).__name__}")
    return act, getattr(activation, "params", NO_PARAMS)


def _norm_act(activation, owner):
    """(act code, slope) of a batch norm's fused activation, one of FUSED_ACTS: "z if z > 0 else
    z * s" takes its one constant from params[0] (LeakyReLU's slope)."""
    act, params = _act(activation, owner)
    return act, params[0]


def _pools_2x2(pool):
    return (type(pool) is MaxPool2d and pool.kernel_size == (2, 2) and pool.stride == (2, 2)
            and pool.padding == (0, 0))


class FusedStep(Module):
    """A step that runs ``parts``, consecutive modules of a Sequential, as one.

    Subclasses give ``applies(*parts)``, the rule under which :func:`plan` builds them, and check
    in their constructor that the activation among ``parts`` is an elementwise one.
    """

    def __init__(self, *parts):
        super().__init__()
        object.__setattr__(self, "parts", parts)    # a tuple: the parts stay their Sequential's

    def extra_repr(self):
        return ", ".join(repr(p) for p in self.parts)


class LinearActivation(FusedStep):
    """Linear, then an elementwise activation, in the Linear's kernels."""

    def __init__(self, linear, activation):
        _act(activation, "Linear")
        super().__init__(linear, activation)

    @staticmethod
    def applies(linear, activation):
        return isinstance(linear, Linear) and getattr(activation, "act", None) is not None

    def forward(self, x):
        linear, activation = self.parts
        y, self._cache = linear.affine(x, *_act(activation, "Linear"))
        return y

    def backward(self, grad_output):
        return self.parts[0].affine_backward(self._saved(), grad_output)


class NormActivation(FusedStep):
    """A batch norm, then ReLU or LeakyReLU, in the batch norm's kernels."""

    def __init__(self, norm, activation):
        _act(activation, type(norm).__name__)
        super().__init__(norm, activation)

    @staticmethod
    def applies(norm, activation):
        # SyncBatchNorm's normalize runs its collective before the fused normalise pass
        return (isinstance(norm, (BatchNorm1d, BatchNorm2d, BatchNorm, SyncBatchNorm))
                and getattr(activation, "act", None) in FUSED_ACTS)

    def forward(self, x):
        norm, activation = self.parts
        y, self._cache = norm.normalize(norm.check_input(x),
                                        *_norm_act(activation, type(norm).__name__))
        return y

    def backward(self, grad_output):
        return self.parts[0].normalize_backward(self._saved(), grad_output)


class NormActivationPool(FusedStep):
    """BatchNorm2d with batch statistics, ReLU or LeakyReLU and MaxPool2d(2) as one step."""

    def __init__(self, norm, activation, pool):
        _act(activation, type(norm).__name__)
        super().__init__(norm, activation, pool)

    @staticmethod
    def applies(norm, activation, pool):
        act = getattr(activation, "act", None)
        return (isinstance(norm, (BatchNorm2d, SyncBatchNorm)) and norm.uses_batch_stats()
                and act in FUSED_ACTS
                and negative_scale(*_norm_act(activation, "BatchNorm2d")) >= 0
                and _pools_2x2(pool))

    def forward(self, x):
        norm, activation, pool = self.parts
        act, slope = _norm_act(activation, type(norm).__name__)
        x = norm.check_input(x)
        pool.check_shape(x.shape)
        norm.check_batch(x.shape)
        ops = backend.ops()
        gamma, beta = norm.affine_arrays(x.dtype)
        total = None
        if _synced(norm):
            mean, m2 = ops.batchnorm_stats(x)
            mean, invstd, total = norm.global_statistics(x.size // x.shape[1], mean, m2)
            pooled, idx = ops.batchnorm_maxpool_apply_forward(x, gamma, beta, mean, invstd, act,
                                                              slope)
        else:
            factor, rm, rv = norm.count_batch(x.dtype)
            pooled, idx, mean, invstd = ops.batchnorm_maxpool_train_forward(
                x, gamma, beta, rm, rv, factor, norm.eps, act, slope)
        self._cache = (x, pooled, idx, mean, invstd, act, slope, total)
        return pooled

    def backward(self, grad_output):
        norm = self.parts[0]
        x, pooled, idx, mean, invstd, act, slope, total = self._saved()
        g = _check_grad(grad_output, x.dtype, pooled.shape, type(norm).__name__)
        gamma, _ = norm.affine_arrays(x.dtype)
        dgamma, dbeta = norm.affine_grads(gamma)
        ops = backend.ops()
        if total is None:
            return ops.batchnorm_maxpool_backward(g, idx, pooled, x, gamma, mean, invstd, act,
                                                  slope, dgamma, dbeta, norm.needs_input_grad)
        sum_g, sum_gx = np.zeros(len(gamma)), np.zeros(len(gamma))
        ops.batchnorm_maxpool_backward(g, idx, pooled, x, gamma, mean, invstd, act, slope, sum_gx,
                                       sum_g, False)
        dgamma += sum_gx.astype(dgamma.dtype)
        dbeta += sum_g.astype(dbeta.dtype)
        if not norm.needs_input_grad:
            return None
        sum_g, sum_gx = norm.global_sums(sum_g, sum_gx)
        return ops.batchnorm_maxpool_input_grad(g, idx, pooled, x, gamma, mean, invstd, act, slope,
                                                sum_g / total, sum_gx / total)


class ConvBlock(FusedStep):
    """A first layer's Conv2d, BatchNorm2d with batch statistics, ReLU or LeakyReLU and
    MaxPool2d(2) as one step; the backward returns None (no input gradient)."""

    def __init__(self, conv, norm, activation, pool):
        _act(activation, "Conv2d")
        super().__init__(conv, norm, activation, pool)

    @staticmethod
    def applies(conv, norm, activation, pool):
        return (isinstance(conv, Conv2d) and not conv.needs_input_grad and conv.stride == (1, 1)
                and conv.groups == 1 and isinstance(conv.padding, tuple)
                and conv.weight.data[0].size <= CONV_BLOCK_MAX_TAPS
                and NormActivationPool.applies(norm, activation, pool)
                and norm.num_features == conv.out_channels and norm.dtype == conv.weight.dtype)

    def forward(self, x):
        conv, norm, activation, pool = self.parts
        act, slope = _norm_act(activation, "Conv2d")
        x, shape = conv.check_input(x)
        pool.check_shape(shape)
        norm.check_batch(shape)
        ops = backend.ops()
        gamma, beta = norm.affine_arrays(x.dtype)
        w = conv.weight.data
        b = conv.bias.data if conv.bias is not None else None
        total = None
        if _synced(norm):
            count, mean, m2, prepared = ops.conv_bn_maxpool_stats(x, w, b, conv.padding,
                                                                  conv.dilation)
            mean, invstd, total = norm.global_statistics(count, mean, m2)
            pooled, idx, saved = ops.conv_bn_maxpool_apply_forward(prepared, w, b, gamma, beta,
                                                                   mean, invstd, act, slope)
        else:
            factor, rm, rv = norm.count_batch(x.dtype)
            pooled, idx, mean, invstd, saved = ops.conv_bn_maxpool_train_forward(
                x, w, b, conv.padding, conv.dilation, gamma, beta, rm, rv, factor, norm.eps, act,
                slope)
        self._cache = (x.dtype, pooled, idx, mean, invstd, saved, act, slope, total)
        return pooled

    def backward(self, grad_output):
        conv, norm = self.parts[:2]
        dtype, pooled, idx, mean, invstd, saved, act, slope, total = self._saved()
        g = _check_grad(grad_output, dtype, pooled.shape, "Conv2d")
        gamma, _ = norm.affine_arrays(dtype)
        dgamma, dbeta = norm.affine_grads(gamma)
        db = conv.bias.grad_buffer() if conv.bias is not None else None   # its gradient is 0
        ops = backend.ops()
        w = conv.weight.data
        if total is None:
            ops.conv_bn_maxpool_backward(g, idx, pooled, saved, w, gamma, mean, invstd, act,
                                         slope, conv.weight.grad_buffer(), db, dgamma, dbeta)
            return None
        b = conv.bias.data if conv.bias is not None else None
        sum_g, sum_gx, partial = ops.conv_bn_maxpool_grad_sums(g, idx, pooled, saved, w, b, gamma,
                                                               mean, invstd, act, slope)
        dgamma += sum_gx.astype(dgamma.dtype)
        dbeta += sum_g.astype(dbeta.dtype)
        sum_g, sum_gx = norm.global_sums(sum_g, sum_gx)
        ops.conv_bn_maxpool_sync_backward(g, idx, pooled, saved, partial, w, gamma, mean, invstd,
                                          act, slope, sum_g / total, sum_gx / total,
                                          conv.weight.grad_buffer())
        return None


class BiasBeforeNorm(FusedStep):
    """A Linear or Conv2d whose bias feeds a batch-statistics batch norm: the layer's own forward
    and backward, and an exactly zero bias gradient (see the module's docstring)."""

    @staticmethod
    def applies(layer, norm):
        if not isinstance(norm, (BatchNorm1d, BatchNorm2d, BatchNorm, SyncBatchNorm)) \
                or not norm.uses_batch_stats() or getattr(layer, "bias", None) is None:
            return False
        if isinstance(layer, Linear):
            return norm.num_features == layer.out_features
        return isinstance(layer, Conv2d) and norm.num_features == layer.out_channels

    def forward(self, x):
        layer = self.parts[0]
        # a Linear's bias is per channel of the norm only for (N, features) input
        self._cache = isinstance(layer, Conv2d) or getattr(x, "ndim", 0) == 2
        return layer(x)   # the layer keeps its own cache (nothing under no_grad)

    def backward(self, grad_output):
        layer = self.parts[0]
        zero_bias = self._saved()
        bias = layer.bias
        kept = None if bias.grad is None or not zero_bias else bias.grad.copy()
        grad_input = layer.backward(grad_output)
        if zero_bias:
            if kept is None:
                bias.grad.fill(0)
            else:
                bias.grad[...] = kept
        return grad_input


def _synced(norm):
    """Whether ``norm`` is a SyncBatchNorm that synchronises this forward over several ranks."""
    return isinstance(norm, SyncBatchNorm) and norm.synced_group() is not None


def _check_grad(grad_output, dtype, shape, owner):
    g = _checks.float_array(grad_output, "grad_output", dtype=dtype, owner=owner)
    if g.shape != shape:
        raise ValueError(f"{owner}: grad_output must have shape {shape}, got {g.shape}")
    return g


# The patterns, longest first: at each position the first that applies takes its modules.
PATTERNS = ((4, ConvBlock), (3, NormActivationPool), (2, LinearActivation), (2, NormActivation))


def plan(modules, previous=()):
    """The steps that run ``modules`` (a Sequential's, in order): a :class:`FusedStep` where a
    pattern applies, the module itself elsewhere. A fused step of ``previous`` (the last forward's
    steps) that starts at the same position and runs the same modules under the same rule is
    taken again rather than rebuilt."""
    old, start = {}, 0
    for step in previous:
        fused = isinstance(step, FusedStep)
        if fused:
            old[start] = step
        start += len(step.parts) if fused else 1
    steps = []
    i = 0
    while i < len(modules):
        for size, cls in PATTERNS:
            parts = modules[i:i + size]
            if len(parts) == size and cls.applies(*parts):
                step = old.get(i)
                if type(step) is not cls or any(a is not b for a, b in zip(step.parts, parts)):
                    step = cls(*parts)
                steps.append(step)
                i += size
                break
        else:
            m = modules[i]
            after = modules[i + 1] if i + 1 < len(modules) else None
            steps.append(BiasBeforeNorm(m) if BiasBeforeNorm.applies(m, after) else m)
            i += 1
    return steps
