"""A training loop for fastlayers models, and the same loop for a PyTorch twin (used by the speed run).

Both engines take batches from the same :class:`~fastlayers.data.DataLoader`, so the two frameworks
see the same data in the same order; only the time spent inside an engine's step is its own.
"""
import time

import numpy as np

from fastlayers.backend import get_backend, use_backend
from fastlayers.clip import clip_grad_norm_
from fastlayers.grad_mode import no_grad
from fastlayers.optim import SGD, Adam, AdamW, Momentum, NAdam, RMSprop, lr_scheduler
from fastlayers.transforms import hflip

OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
              "nadam": NAdam}
SCHEDULES = ("none", "cosine", "onecycle", "step")


def make_scheduler(module, schedule, optimizer, lr, total_steps):
    """The learning-rate schedule called ``schedule`` over ``total_steps`` optimizer steps, stepped
    after every step, from ``module``: ``fastlayers.optim.lr_scheduler`` or, for the PyTorch twin,
    ``torch.optim.lr_scheduler`` (the same classes and formulas). None for ``"none"``.

    cosine: CosineAnnealingLR from ``lr`` to 0; onecycle: OneCycleLR up to ``lr`` (with its
    momentum cycling); step: StepLR, lr times 0.1 after each third of the run."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if schedule == "cosine":
        return module.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "onecycle":
        return module.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    if schedule == "step":
        return module.StepLR(optimizer, step_size=max(1, total_steps // 3), gamma=0.1)
    return None


class Engine:
    """Trains a fastlayers model: ``train_step(x, y) -> loss``, ``predict(x) -> class indices``, on
    ``backend`` (default: the backend active when the engine is made). ``scheduler`` is stepped
    after every optimizer step; ``clip_grad`` clips the gradients' total 2-norm before it.
    ``augment`` (a ``fastlayers.transforms`` transform) turns each training batch into the one the
    step trains on, inside the step (its time is training time); ``tta_flip`` predicts from the
    sum of the logits of each image and its mirror image (test-time flip averaging)."""

    def __init__(self, model, loss_fn, optimizer, backend=None, scheduler=None, clip_grad=None,
                 augment=None, tta_flip=False):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.scheduler, self.clip_grad = scheduler, clip_grad
        self.augment, self.tta_flip = augment, tta_flip
        self.backend = backend or get_backend()
        self.name = "fastlayers" if backend is None else f"fastlayers-{backend}"
        first = next(iter(model)) if hasattr(model, "__iter__") else model
        first.needs_input_grad = False   # the images are data: no gradient wanted

    def train_step(self, x, y):
        with use_backend(self.backend):
            if self.augment is not None:
                x = self.augment(x)
            loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad()
            self.model.backward(self.loss_fn.backward())
            if self.clip_grad is not None:
                clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        return loss

    def predict(self, x):
        with use_backend(self.backend), no_grad():
            logits = self.model(x)
            if self.tta_flip:
                logits = logits + self.model(hflip(x))
            return logits.argmax(axis=1)

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
