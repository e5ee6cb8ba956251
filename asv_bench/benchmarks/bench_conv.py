"""kernels/conv.py: 3x3 convolution, stride 1, padding 1 (the CNN's): forward, input gradient,
weight+bias gradient.

torch: F.conv2d under no_grad; the two backward halves are autograd.grad for x, and for (w, b).
"""
from .common import Case, Family, ops, randn, speedup, speedup_row, tensor, torch

NAMES = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")
# (N, C, H, W, O): the CNN's two convolutions at batch 128, and a wider one.
_SHAPES = [(128, 1, 28, 28, 16), (128, 16, 14, 14, 32), (32, 32, 28, 28, 32)]
SHAPES = {f"{n}x{c}x{h}x{w} -> {o}": (n, c, h, w, o) for n, c, h, w, o in _SHAPES}
TRAINING = [("conv2d 16->32 3x3", ((128, 16, 14, 14, 32),)),
            ("conv2d 1->16 3x3", ((128, 1, 28, 28, 16),))]
ONE, PAD = (1, 1), (1, 1)


def make(impl, shape):
    n, c, h, w, o = shape
    x = randn((n, c, h, w), 0)
    wt = randn((o, c, 3, 3), 1, scale=(9 * c) ** -0.5)
    b = randn((o,), 2, scale=0.1)
    g = randn((n, o, h, w), 3)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        xt, wtt, bt = (tensor(t, a, True) for a in (x, wt, b))
        gt = tensor(t, g)

        def forward():
            with t.no_grad():
                F.conv2d(xt, wtt, bt, padding=1)
        yt = F.conv2d(xt, wtt, bt, padding=1)
        return Case({
            "forward": forward,
            "backward_input": lambda: t.autograd.grad(yt, xt, gt, retain_graph=True),
            "backward_weight": lambda: t.autograd.grad(yt, (wtt, bt), gt, retain_graph=True)})
    k = ops(impl, *NAMES)
    dw, db = wt * 0, b * 0
    return Case({
        "forward": lambda: k.conv2d_forward(x, wt, b, ONE, PAD, ONE),
        "backward_input": lambda: k.conv2d_backward_input(g, wt, x.shape, ONE, PAD, ONE),
        "backward_weight": lambda: k.conv2d_backward_weight(g, x, ONE, PAD, ONE, dw, db)})


class Conv2d(Family):
    make = staticmethod(make)
    shapes = SHAPES
    timed = ("forward", "backward_input", "backward_weight")
    timeout = 180


@speedup_row("conv2d 128x16x14x14 -> 32: numba speed-up over numpy (fwd+bwd)", timeout=300)
def track_numba_speedup():
    return speedup(make, *TRAINING[0][1], rounds=7)
