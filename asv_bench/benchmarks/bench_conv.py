"""kernels/conv.py: 3x3 convolution, stride 1, padding 1 (the CNN's): forward, input gradient,
weight+bias gradient; and the same with groups: depthwise (groups = channels, MobileNet's 3x3
block, with a channel multiplier of 1 and of 2) and grouped (ResNeXt-like, 4 channels a group).

torch: F.conv2d under no_grad; the two backward halves are autograd.grad for x, and for (w, b).
"""
from .common import Case, Family, ops, randn, speedup, speedup_row, tensor, torch

NAMES = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")
# (N, C, H, W, O): the CNN's two convolutions at batch 128, and a wider one.
_SHAPES = [(128, 1, 28, 28, 16), (128, 16, 14, 14, 32), (32, 32, 28, 28, 32)]
SHAPES = {f"{n}x{c}x{h}x{w} -> {o}": (n, c, h, w, o) for n, c, h, w, o in _SHAPES}
# (N, C, H, W, O, groups)
_GROUPED = [(64, 32, 28, 28, 32, 32), (64, 32, 28, 28, 64, 32), (64, 32, 28, 28, 32, 8)]
GROUPED = {f"{n}x{c}x{h}x{w} -> {o} " + ("depthwise" if g == c else f"groups={g}"):
           (n, c, h, w, o, g) for n, c, h, w, o, g in _GROUPED}
TRAINING = [("conv2d 16->32 3x3", ((128, 16, 14, 14, 32),)),
            ("conv2d 1->16 3x3", ((128, 1, 28, 28, 16),)),
            ("depthwise conv2d 32 3x3", ((64, 32, 28, 28, 32, 32),))]
ONE, PAD = (1, 1), (1, 1)


def make(impl, shape):
    """The Case of a 3x3 convolution over ``shape`` = (N, C, H, W, O) or (N, C, H, W, O, groups)."""
    n, c, h, w, o, *rest = shape
    groups = rest[0] if rest else 1
    x = randn((n, c, h, w), 0)
    wt = randn((o, c // groups, 3, 3), 1, scale=(9 * c // groups) ** -0.5)
    b = randn((o,), 2, scale=0.1)
    g = randn((n, o, h, w), 3)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        xt, wtt, bt = (tensor(t, a, True) for a in (x, wt, b))
        gt = tensor(t, g)

        def forward():
            with t.no_grad():
                F.conv2d(xt, wtt, bt, padding=1, groups=groups)
        yt = F.conv2d(xt, wtt, bt, padding=1, groups=groups)
        return Case({
            "forward": forward,
            "backward_input": lambda: t.autograd.grad(yt, xt, gt, retain_graph=True),
            "backward_weight": lambda: t.autograd.grad(yt, (wtt, bt), gt, retain_graph=True)})
    k = ops(impl, *NAMES)
    dw, db = wt * 0, b * 0
    return Case({
        "forward": lambda: k.conv2d_forward(x, wt, b, ONE, PAD, ONE, groups),
        "backward_input": lambda: k.conv2d_backward_input(g, wt, x.shape, ONE, PAD, ONE, groups),
        "backward_weight": lambda: k.conv2d_backward_weight(g, x, ONE, PAD, ONE, dw, db, groups)})


class Conv2d(Family):
    make = staticmethod(make)
    shapes = SHAPES
    timed = ("forward", "backward_input", "backward_weight")
    timeout = 180


class GroupedConv2d(Family):
    make = staticmethod(make)
    shapes = GROUPED
    timed = ("forward", "backward_input", "backward_weight")
    timeout = 180


@speedup_row("conv2d 128x16x14x14 -> 32: numba speed-up over numpy (fwd+bwd)", timeout=300)
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1], rounds=7)


@speedup_row("depthwise conv2d 64x32x28x28 3x3: numba speed-up over numpy (fwd+bwd)",
             timeout=300)
def track_depthwise_numba_speedup():
    return speedup(make, *TRAINING[2][1], rounds=7)
