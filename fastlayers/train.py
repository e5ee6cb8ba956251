"""A training loop for fastlayers models, and the same loop for a PyTorch twin (used by the speed run).

Both engines take batches from the same :class:`~fastlayers.data.DataLoader`, so the two frameworks
see the same data in the same order; only the time spent inside an engine's step is its own.
"""
import time

import numpy as np

from fastlayers.backend import get_backend, use_backend
from fastlayers.optim import SGD, Adam, AdamW, Momentum, NAdam, RMSprop

OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
              "nadam": NAdam}


class Engine:
    """Trains a fastlayers model: ``train_step(x, y) -> loss``, ``predict(x) -> class indices``, on
    ``backend`` (default: the backend active when the engine is made)."""

    def __init__(self, model, loss_fn, optimizer, backend=None):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.backend = backend or get_backend()
        self.name = "fastlayers" if backend is None else f"fastlayers-{backend}"
        first = next(iter(model)) if hasattr(model, "__iter__") else model
        first.needs_input_grad = False   # the images are data: no gradient wanted

    def train_step(self, x, y):
        with use_backend(self.backend):
            loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad()
            self.model.backward(self.loss_fn.backward())
            self.optimizer.step()
        return loss

    def predict(self, x):
        with use_backend(self.backend):
            return self.model(x).argmax(axis=1)

    def train(self, mode):
        self.model.train(mode)


def run_epoch(engine, loader, progress=None):
    """One pass over ``loader``. Returns (mean loss, seconds in the engine's steps, samples)."""
    total, count, seconds = 0.0, 0, 0.0
    engine.train(True)
    for x, y in loader:
        t0 = time.perf_counter()
        loss = engine.train_step(x, y)
        seconds += time.perf_counter() - t0
        total += loss * len(y)
        count += len(y)
        if progress is not None:
            progress.set_postfix_str(f"loss {loss:.4f}, {count / max(seconds, 1e-9):,.0f} "
                                     "samples/s of training time", refresh=False)
            progress.update(len(y))
    return total / max(count, 1), seconds, count


def accuracy(engine, loader):
    """Fraction of ``loader``'s samples whose predicted class is the label (evaluation mode)."""
    engine.train(False)
    correct = total = 0
    for x, y in loader:
        correct += int(np.count_nonzero(engine.predict(x) == y))
        total += len(y)
    return correct / max(total, 1)
