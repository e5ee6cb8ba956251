"""kernels/softmax.py: softmax and log-softmax over rows (forward, backward), and cross-entropy on
logits with int labels, fused with its gradient.

cross_entropy: forward is the loss alone; backward is loss *and* gradient (one fused pass here;
torch: F.cross_entropy forward + autograd.grad). softmax/log_softmax torch: F.softmax /
F.log_softmax under no_grad; backward is autograd.grad for x.
"""
import math

from kernels.softmax import MEAN

from .common import IMPLS, Case, calls_for, case, label, labels, ops, randn, speedup, tensor, torch

# (N, C): MNIST logits of a batch of 128, a wide softmax, a large one.
_SHAPES = [(128, 10), (128, 1000), (4096, 1024)]
SHAPES = {label(s, calls_for(math.prod(s))): s for s in _SHAPES}
OPS = ["softmax", "log_softmax", "cross_entropy"]
TRAINING = [("cross_entropy", ((128, 10), "cross_entropy")), ("softmax", ((128, 10), "softmax"))]


def make(impl, shape, op):
    n, c = shape
    x = randn(shape, 0, scale=3.0)
    g = randn(shape, 1)
    t_idx = labels(n, c)
    calls = calls_for(x.size)
    if impl == "torch":
        t = torch()
        F = t.nn.functional
        xt = tensor(t, x, True)
        gt = tensor(t, g)
        if op == "cross_entropy":
            lt = t.from_numpy(t_idx)

            def forward():
                with t.no_grad():
                    F.cross_entropy(xt, lt)

            def backward():
                t.autograd.grad(F.cross_entropy(xt, lt), xt)
            return Case({"forward": forward, "backward": backward}, calls)
        fn = {"softmax": F.softmax, "log_softmax": F.log_softmax}[op]

        def forward():
            with t.no_grad():
                fn(xt, dim=1)
        yt = fn(xt, dim=1)

        def backward():
            t.autograd.grad(yt, xt, gt, retain_graph=True)
        return Case({"forward": forward, "backward": backward}, calls)
    if op == "cross_entropy":
        k = ops(impl, "cross_entropy_forward")
        return Case({"forward": lambda: k.cross_entropy_forward(x, t_idx, MEAN, False),
                     "backward": lambda: k.cross_entropy_forward(x, t_idx, MEAN, True)}, calls)
    k = ops(impl, f"{op}_forward", f"{op}_backward")
    fwd, bwd = getattr(k, f"{op}_forward"), getattr(k, f"{op}_backward")
    y = fwd(x)
    return Case({"forward": lambda: fwd(x), "backward": lambda: bwd(g, y)}, calls)


class Softmax:
    params = [IMPLS, list(SHAPES), OPS]
    param_names = ["impl", "shape", "op"]
    timeout = 120

    def setup(self, impl, shape, op):
        self.case = case(make, impl, SHAPES[shape], op)

    def time_forward(self, impl, shape, op):
        self.case.run("forward")

    def time_backward(self, impl, shape, op):
        self.case.run("backward")


def track_numba_speedup():
    return speedup(make, *TRAINING[0][1])


track_numba_speedup.unit = "x"
track_numba_speedup.pretty_name = "cross-entropy 128x10: numba speed-up over numpy (loss, loss+grad)"
track_numba_speedup.timeout = 120
