"""The BLAS floor: how close a speed-run model's training step runs to the GEMMs it cannot avoid.

A training step of a model made of Linear layers (and whatever lies between them) runs, for each
Linear (in -> out) at batch N, three GEMMs: the forward x @ w.T (N x in x out), the weight gradient
dw += g.T @ x, and, except for the first layer (its input is data), the input gradient g @ w. Those
GEMMs alone, at the same shapes and threads, with preallocated ``out=`` buffers and the same BLAS
calls as ``kernels/linear.py``, are the floor: no step that hands its GEMMs to BLAS can be faster.
``step / floor`` says how much of the step lies outside BLAS (1.0: none).

The step is the speed run's: the next batch gathered by :class:`fastlayers.data.DataLoader`
(shuffled, uint8 images scaled to float32) and ``fastlayers.train.Engine.train_step`` on it.
:func:`measure` times both interleaved in one process; ``asv_bench/floor.py`` prints the table,
with PyTorch's step in a separate process. The ``track_`` rows put the ratio on the dashboard.
"""
import numpy as np

from .common import SMOKE, interleaved_medians, settle

# model: (optimizer, learning rate, training batch), as bench_models and the figures.
MODELS = {"mlp": ("sgd", 0.05, 64), "mlp-bn": ("adam", 1e-3, 128), "cnn": ("adam", 1e-3, 128)}
EVAL_BATCH = 1000


def dataset():
    """Fashion-MNIST where it is installed (the issue's figures), else the embedded mnist-10k."""
    settle()
    from fastlayers.data import DatasetError, load_dataset
    try:
        return load_dataset("fashion-mnist", data_dir="/usr/share/datasets/fashion-mnist",
                            download=False)
    except DatasetError:
        return load_dataset("mnist-10k")


def linear_shapes(model):
    """(in, out, needs dx) of each Linear layer of ``model``, in order; the first layer needs no
    input gradient (the speed run's engine turns it off: its input is data)."""
    import fastlayers as fl
    linears = [m for m in model.modules() if isinstance(m, fl.Linear)]
    first = next(iter(model))
    return [(m.in_features, m.out_features, m is not first) for m in linears]


def gemm_floor(shapes, batch, forward_only=False, dtype=np.float32, seed=0):
    """A callable running every GEMM of one training step (``forward_only``: of one evaluation
    pass) at ``shapes`` (from :func:`linear_shapes`) and ``batch``, into preallocated buffers; and
    their FLOPs."""
    from kernels.linear import _GEMM
    rng = np.random.default_rng(seed)
    gemm = _GEMM[np.dtype(dtype)]
    layers = []
    for n_in, n_out, needs_dx in shapes:
        x = rng.random((batch, n_in), dtype=dtype)
        w = rng.random((n_out, n_in), dtype=dtype)
        g = rng.random((batch, n_out), dtype=dtype)
        layers.append((x, w, g, np.empty((batch, n_out), dtype), np.zeros_like(w),
                       np.empty((batch, n_in), dtype) if needs_dx else None))

    def run():
        for x, w, _, z, _, _ in layers:
            np.matmul(x, w.T, out=z)
        if forward_only:
            return
        for x, w, g, _, dw, dx in reversed(layers):
            gemm(1.0, x.T, g.T, beta=1.0, c=dw.T, trans_b=1, overwrite_c=1)
            if dx is not None:
                np.matmul(g, w, out=dx)
    passes = (lambda needs_dx: 1) if forward_only else (lambda needs_dx: 3 if needs_dx else 2)
    flops = sum(2 * batch * n_in * n_out * passes(needs_dx) for n_in, n_out, needs_dx in shapes)
    return run, flops


class SpeedRun:
    """Model ``name`` as the speed run trains it, on ``backend``: ``step()`` gathers the next
    training batch and runs one training step; ``evaluate()`` predicts one evaluation batch of
    1000 (no-grad, evaluation mode). ``torch=True`` runs the PyTorch twin instead (same weights,
    batches and hyperparameters; fastlayers.torch_bridge.TorchEngine)."""

    def __init__(self, name, data, torch=False, backend="numba", seed=0):
        import fastlayers as fl
        from fastlayers.data import DataLoader
        from fastlayers.models import FLAT_INPUT, build
        from fastlayers.train import OPTIMIZERS, Engine
        opt, lr, self.batch = MODELS[name]
        fl.manual_seed(seed)
        self.model = build(name)
        loss_fn = fl.CrossEntropyLoss()
        optimizer = OPTIMIZERS[opt](self.model.parameters(), lr=lr)
        if torch:
            from fastlayers.torch_bridge import TorchEngine
            self.engine = TorchEngine(self.model, loss_fn, optimizer)
        else:
            self.engine = Engine(self.model, loss_fn, optimizer, backend=backend)
        flat = FLAT_INPUT[name]
        self.train_loader = DataLoader(data.x_train, data.y_train, batch_size=self.batch,
                                       shuffle=True, drop_last=True, flatten=flat)
        self.test_loader = DataLoader(data.x_test, data.y_test, batch_size=EVAL_BATCH,
                                      drop_last=True, flatten=flat)
        self._train = self._cycle(self.train_loader)
        self._test = self._cycle(self.test_loader)
        self.step()       # compiles (or loads) the kernels of both passes
        self.evaluate()

    @staticmethod
    def _cycle(loader):
        while True:
            yield from loader

    def step(self):
        x, y = next(self._train)
        self.engine.train(True)
        self.engine.train_step(x, y)

    def evaluate(self):
        x, _ = next(self._test)
        self.engine.train(False)
        self.engine.predict(x)


def measure(name, rounds=15, data=None):
    """Medians of ``rounds`` interleaved rounds, in this process, of model ``name``'s speed-run
    step and evaluation batch and of their GEMM floors: {"step_s", "floor_s", "gemm_flops",
    "eval_s", "eval_floor_s"}."""
    run = SpeedRun(name, data or dataset())
    shapes = linear_shapes(run.model)
    floor, flops = gemm_floor(shapes, run.batch)
    eval_floor, _ = gemm_floor(shapes, EVAL_BATCH, forward_only=True)
    med = interleaved_medians({"step": run.step, "floor": floor, "eval": run.evaluate,
                               "eval_floor": eval_floor}, rounds=rounds, min_time=20e-3)
    return {"step_s": med["step"], "floor_s": med["floor"], "gemm_flops": flops,
            "eval_s": med["eval"], "eval_floor_s": med["eval_floor"]}


def _track(name):
    def track():
        r = measure(name, rounds=1 if SMOKE else 11)
        return r["step_s"] / r["floor_s"]
    track.__name__ = track.__qualname__ = f"track_floor_ratio_{name.replace('-', '_')}"
    track.unit = "x"
    track.pretty_name = f"{name} training step / its BLAS floor (1.0: nothing outside BLAS)"
    track.timeout = 300
    return track


track_floor_ratio_mlp = _track("mlp")
track_floor_ratio_mlp_bn = _track("mlp-bn")
