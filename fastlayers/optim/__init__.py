"""Optimizers (``optimizer.py``: torch.optim's formulas and contract) and learning-rate schedulers
(``lr_scheduler.py``: torch.optim.lr_scheduler's)."""
from fastlayers.optim.optimizer import SGD, Adam, AdamW, Momentum, NAdam, Nadam, Optimizer, RMSprop
from fastlayers.optim import lr_scheduler

__all__ = ["Adam", "AdamW", "Momentum", "NAdam", "Nadam", "Optimizer", "RMSprop", "SGD", "lr_scheduler"]
