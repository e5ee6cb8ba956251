"""End to end: one training step (forward, loss, backward, optimizer step) and one inference pass of
each speed-run model (fastlayers.models), on each backend.

    mlp       784-128-10, SGD, batch 64
    mlp-bn    784-512-256-128-10 with BatchNorm1d/ReLU/Dropout(0.4/0.2/0.2), Adam, batch 128
    cnn       fastlayers.models.cnn (two 3x3 Conv2d/BatchNorm2d/ReLU/MaxPool2d blocks, Linear),
              Adam, batch 128
    cnn-wide  fastlayers.models.cnn_wide (32 and 64 channels, Linear 3136-128-10), AdamW, batch
              128: the fashion-93 recipe's model (without its flips and schedule)

numba and numpy run fastlayers' training engine (fastlayers.train.Engine) with that backend;
torch runs its PyTorch twin (fastlayers.torch_bridge.TorchEngine: same weights, loss and optimizer
hyperparameters). Inference is the evaluation-mode forward pass and argmax over a batch of 1000 (the
speed run's evaluation batch). Data are random images in [0, 1) with random labels.
"""
from .common import IMPLS, interleaved_medians, labels, torch, uniform

# model: (optimizer, learning rate, training batch)
MODELS = {"mlp": ("sgd", 0.05, 64), "mlp-bn": ("adam", 1e-3, 128), "cnn": ("adam", 1e-3, 128),
          "cnn-wide": ("adamw", 2e-3, 128)}
EVAL_BATCH = 1000

_ENGINES = {}


def _models():
    try:
        from fastlayers import models
    except ImportError:
        raise NotImplementedError("fastlayers.models has not landed")
    return models


def inputs(name, n, seed=0):
    """Random float32 images in [0, 1) in the layout model ``name`` takes, and int64 labels."""
    flat = _models().FLAT_INPUT[name]
    x = uniform((n, 784) if flat else (n, 1, 28, 28), 0.0, 1.0, seed)
    return x, labels(n, 10, seed)


def engine(impl, name):
    """A training engine for model ``name`` on backend ``impl``, warmed up: one training step at the
    training batch and one inference pass at the evaluation batch (compiles the Numba kernels)."""
    key = (impl, name)
    if key not in _ENGINES:
        import fastlayers as fl
        from fastlayers.train import OPTIMIZERS, Engine
        models = _models()
        opt, lr, batch = MODELS[name]
        fl.manual_seed(0)
        model = models.build(name)
        loss_fn = fl.CrossEntropyLoss()
        optimizer = OPTIMIZERS[opt](model.parameters(), lr=lr)
        if impl == "torch":
            torch()  # sets torch's threads, or skips
            from fastlayers.torch_bridge import TorchEngine
            eng = TorchEngine(model, loss_fn, optimizer)
        else:
            eng = Engine(model, loss_fn, optimizer, backend=impl)  # the engine pins its backend
        x, y = inputs(name, batch)
        eng.train(True)
        eng.train_step(x, y)
        eng.train(False)
        eng.predict(inputs(name, EVAL_BATCH, 1)[0])
        _ENGINES[key] = eng
    return _ENGINES[key]


class _Model:
    """impl x model; asv skips this base (its name starts with an underscore)."""
    params = [IMPLS, list(MODELS)]
    param_names = ["impl", "model"]
    timeout = 300


class TrainStep(_Model):
    """One training step: forward, cross-entropy loss, backward, optimizer step."""

    def setup(self, impl, name):
        self.engine = engine(impl, name)
        self.engine.train(True)
        self.x, self.y = inputs(name, MODELS[name][2])

    def time_train_step(self, impl, name):
        self.engine.train_step(self.x, self.y)


class Inference(_Model):
    """Evaluation-mode forward pass and argmax over a batch of 1000."""

    def setup(self, impl, name):
        self.engine = engine(impl, name)
        self.engine.train(False)
        self.x = inputs(name, EVAL_BATCH, 1)[0]

    def time_inference(self, impl, name):
        self.engine.predict(self.x)


def track_numba_speedup_train_step():
    """numpy / numba time of one mlp-bn training step, measured side by side."""
    fns = {}
    for impl in ("numba", "numpy"):
        eng = engine(impl, "mlp-bn")
        x, y = inputs("mlp-bn", MODELS["mlp-bn"][2])

        def step(eng=eng, x=x, y=y):
            eng.train_step(x, y)
        fns[impl] = step
    med = interleaved_medians(fns, rounds=11)
    return med["numpy"] / med["numba"]


track_numba_speedup_train_step.unit = "x"
track_numba_speedup_train_step.pretty_name = "mlp-bn training step: numba speed-up over numpy"
track_numba_speedup_train_step.timeout = 300
