"""The fused training steps of fastlayers/fused.py, each against the kernels it replaces.

- kernels/batchnorm_pool.py: BatchNorm2d (batch statistics) + ReLU + MaxPool2d(2) in one forward
  (the full-size activation never written) and one backward, at the cnn's second block (and its
  first block's size, where the conv block below does not apply);
- kernels/convbn.py: a first layer's Conv2d 3x3 (padding 1) + BatchNorm2d + ReLU + MaxPool2d(2),
  the cnn's first block: the convolution's output is never written, either way, and the input
  gets no gradient.

impl: ``numba`` the fused kernels; ``numpy`` their twins (the composition of the unfused layers'
twins); ``numba-unfused`` the numba kernels Sequential runs for the same layers without that fusion
(BatchNorm2d + ReLU in one kernel, then max pooling; the convolution, then the fused BatchNorm2d +
ReLU + MaxPool2d); ``torch`` the same sequence of torch.nn.functional ops (F.batch_norm in training
mode, F.relu, F.max_pool2d; F.conv2d first) under no_grad, and autograd.grad for the inputs that
need a gradient (x, gamma, beta; the conv block: w, b, gamma, beta).
"""
from kernels.activations import RELU

from .common import (IMPLS, Case, Family, calls_for, interleaved_medians, ops, randn, shape_labels,
                     speedup, speedup_row, tensor, torch, torch_case)

UNFUSED = "numba-unfused"
MOMENTUM, EPS = 0.1, 1e-5
ONE, PAD = (1, 1), (1, 1)
# (N, C, H, W): the cnn's second block's input at batch 128 (the one this kernel runs there), and
# its first block's size.
_SHAPES = [(128, 32, 14, 14), (128, 16, 28, 28)]
SHAPES = shape_labels(_SHAPES)
# (N, C, H, W, O): the cnn's first block at batch 128.
CONV_SHAPES = {"128x1x28x28 -> 16": (128, 1, 28, 28, 16)}


def _norm_arrays(c):
    gamma = 1 + randn((c,), 2, scale=0.1)
    beta = randn((c,), 3, scale=0.1)
    return gamma, beta, gamma * 0, gamma * 0 + 1


def make(impl, shape):
    """BatchNorm2d + ReLU + MaxPool2d(2) over x of ``shape`` (N, C, H, W)."""
    n, c, h, w = shape
    x = randn(shape, 0, scale=2.0) + 0.5
    g = randn((n, c, h // 2, w // 2), 1)
    gamma, beta, rm, rv = _norm_arrays(c)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        rmt, rvt = t.zeros(c), t.ones(c)
        return torch_case(t, lambda xt, gt_, bt: F.max_pool2d(F.relu(F.batch_norm(
            xt, rmt, rvt, gt_, bt, True, MOMENTUM, EPS)), 2), [x, gamma, beta], g, calls)
    dgamma, dbeta = gamma * 0, beta * 0
    if impl == UNFUSED:
        k = ops("numba", "batchnorm_train_forward", "batchnorm_backward", "maxpool2d_forward",
                "maxpool2d_backward")

        def forward():
            y, _, _ = k.batchnorm_train_forward(x, gamma, beta, rm, rv, MOMENTUM, EPS, RELU, 0.0)
            return k.maxpool2d_forward(y, (2, 2), (2, 2), (0, 0))
        y, mean, invstd = k.batchnorm_train_forward(x, gamma, beta, rm, rv, MOMENTUM, EPS, RELU,
                                                    0.0)
        _, flat = k.maxpool2d_forward(y, (2, 2), (2, 2), (0, 0))

        def backward():
            dense = k.maxpool2d_backward(g, flat, x.shape)
            return k.batchnorm_backward(dense, x, y, gamma, mean, invstd, RELU, 0.0, True, dgamma,
                                        dbeta, True)
        return Case({"forward": forward, "backward": backward}, calls)
    k = ops(impl, "batchnorm_maxpool_train_forward", "batchnorm_maxpool_backward")
    pooled, idx, mean, invstd = k.batchnorm_maxpool_train_forward(x, gamma, beta, rm, rv,
                                                                  MOMENTUM, EPS, RELU, 0.0)
    return Case({
        "forward": lambda: k.batchnorm_maxpool_train_forward(x, gamma, beta, rm, rv, MOMENTUM,
                                                             EPS, RELU, 0.0),
        "backward": lambda: k.batchnorm_maxpool_backward(g, idx, pooled, x, gamma, mean, invstd,
                                                         RELU, 0.0, dgamma, dbeta, True),
    }, calls)


def make_conv_block(impl, shape):
    """Conv2d 3x3 (padding 1, bias) + BatchNorm2d + ReLU + MaxPool2d(2) of a first layer, over
    ``shape`` = (N, C, H, W, O); the backward gives the parameters' gradients only."""
    n, c, h, w, o = shape
    x = randn((n, c, h, w), 0)
    wt = randn((o, c, 3, 3), 1, scale=(9 * c) ** -0.5)
    b = randn((o,), 2, scale=0.1)
    g = randn((n, o, h // 2, w // 2), 3)
    gamma, beta, rm, rv = _norm_arrays(o)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        xt = tensor(t, x)
        params = tuple(tensor(t, a, True) for a in (wt, b, gamma, beta))
        rmt, rvt = t.zeros(o), t.ones(o)
        gt = tensor(t, g)

        def block():
            wt_, bt, gt_, bet = params
            z = F.conv2d(xt, wt_, bt, padding=1)
            return F.max_pool2d(F.relu(F.batch_norm(z, rmt, rvt, gt_, bet, True, MOMENTUM, EPS)),
                                2)

        def forward():
            with t.no_grad():
                block()
        out = block()
        return Case({"forward": forward,
                     "backward": lambda: t.autograd.grad(out, params, gt, retain_graph=True)})
    dw, db, dgamma, dbeta = wt * 0, b * 0, gamma * 0, beta * 0
    if impl == UNFUSED:
        k = ops("numba", "conv2d_forward", "conv2d_backward_weight",
                "batchnorm_maxpool_train_forward", "batchnorm_maxpool_backward")

        def forward():
            z = k.conv2d_forward(x, wt, b, ONE, PAD, ONE, 1)
            return k.batchnorm_maxpool_train_forward(z, gamma, beta, rm, rv, MOMENTUM, EPS, RELU,
                                                     0.0)
        z = k.conv2d_forward(x, wt, b, ONE, PAD, ONE, 1)
        pooled, idx, mean, invstd = k.batchnorm_maxpool_train_forward(z, gamma, beta, rm, rv,
                                                                      MOMENTUM, EPS, RELU, 0.0)

        def backward():
            dz = k.batchnorm_maxpool_backward(g, idx, pooled, z, gamma, mean, invstd, RELU, 0.0,
                                              dgamma, dbeta, True)
            k.conv2d_backward_weight(dz, x, ONE, PAD, ONE, dw, db, 1)
        return Case({"forward": forward, "backward": backward})
    k = ops(impl, "conv_bn_maxpool_train_forward", "conv_bn_maxpool_backward")
    pooled, idx, mean, invstd, saved = k.conv_bn_maxpool_train_forward(
        x, wt, b, PAD, ONE, gamma, beta, rm, rv, MOMENTUM, EPS, RELU, 0.0)
    return Case({
        "forward": lambda: k.conv_bn_maxpool_train_forward(x, wt, b, PAD, ONE, gamma, beta, rm,
                                                           rv, MOMENTUM, EPS, RELU, 0.0),
        "backward": lambda: k.conv_bn_maxpool_backward(g, idx, pooled, saved, wt, gamma, mean,
                                                       invstd, RELU, 0.0, dw, db, dgamma, dbeta),
    })


TRAINING = [("batchnorm2d+relu+maxpool2d, fused", ((128, 32, 14, 14),), make),
            ("conv2d 1->16 3x3+batchnorm2d+relu+maxpool2d, fused", ((128, 1, 28, 28, 16),),
             make_conv_block)]


class BatchNormMaxPool2d(Family):
    make = staticmethod(make)
    impls = IMPLS + [UNFUSED]
    shapes = SHAPES


class ConvBatchNormMaxPool2d(Family):
    make = staticmethod(make_conv_block)
    impls = IMPLS + [UNFUSED]
    shapes = CONV_SHAPES
    timeout = 180


def fusion_speedup(factory, *key, rounds=15):
    """The unfused numba kernels' time / the fused kernels' time (forward + backward), measured
    side by side."""
    fns = {}
    for impl in ("numba", UNFUSED):
        for name, fn in factory(impl, *key).fns.items():
            fns[(impl, name)] = fn
    med = interleaved_medians(fns, rounds=rounds)
    return (sum(t for (impl, _), t in med.items() if impl == UNFUSED)
            / sum(t for (impl, _), t in med.items() if impl == "numba"))


@speedup_row("batchnorm2d+relu+maxpool2d 128x32x14x14 fused: numba speed-up over numpy (fwd+bwd)")
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


@speedup_row("batchnorm2d+relu+maxpool2d 128x32x14x14: fused speed-up over the unfused numba "
             "kernels (fwd+bwd)")
def track_fusion_speedup():
    return fusion_speedup(make, *TRAINING[0][1])


@speedup_row("conv2d 1->16 3x3+batchnorm2d+relu+maxpool2d 128x1x28x28 fused: numba speed-up over "
             "numpy (fwd+bwd)", timeout=300)
def track_conv_block_numba_speedup():
    return speedup(make_conv_block, *TRAINING[1][1], rounds=7)


@speedup_row("conv2d 1->16 3x3+batchnorm2d+relu+maxpool2d 128x1x28x28: fused speed-up over the "
             "unfused numba kernels (fwd+bwd)", timeout=300)
def track_conv_block_fusion_speedup():
    return fusion_speedup(make_conv_block, *TRAINING[1][1], rounds=7)
