"""The same model, loss and optimizer in PyTorch, with the same weights: for parity tests and for the
speed run's ``--compare-torch``. Importing this module needs torch; fastlayers itself does not.
"""
import numpy as np
import torch

from fastlayers import activation, batchnorm, conv, dropout, linear, loss, module, optim, pooling


def _t(a):
    return torch.from_numpy(np.array(a, copy=True))


def to_torch(m):
    """A ``torch.nn.Module`` equivalent to ``m`` with copies of its parameters and buffers."""
    nn = torch.nn
    if isinstance(m, module.Sequential):
        return nn.Sequential(*[to_torch(c) for c in m])
    simple = {activation.ReLU: nn.ReLU, activation.Sigmoid: nn.Sigmoid, activation.Tanh: nn.Tanh,
              linear.Identity: nn.Identity}
    if type(m) in simple:
        return simple[type(m)]()
    if isinstance(m, activation.LeakyReLU):
        return nn.LeakyReLU(m.slope)
    if isinstance(m, (activation.Softmax, activation.LogSoftmax)):
        return (nn.Softmax if isinstance(m, activation.Softmax) else nn.LogSoftmax)(dim=m.dim)
    if isinstance(m, linear.Flatten):
        return nn.Flatten(m.start_dim, m.end_dim)
    if isinstance(m, dropout.Dropout2d):
        return nn.Dropout2d(m.p)
    if isinstance(m, dropout.Dropout):
        return nn.Dropout(m.p)
    if isinstance(m, pooling.MaxPool2d):
        return nn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    if isinstance(m, pooling.AvgPool2d):
        return nn.AvgPool2d(m.kernel_size, m.stride, m.padding)
    if isinstance(m, linear.Linear):
        t = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    elif isinstance(m, conv.Conv2d):
        t = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                      bias=m.bias is not None)
    elif isinstance(m, batchnorm._BatchNorm):
        cls = nn.BatchNorm2d if isinstance(m, batchnorm.BatchNorm2d) else nn.BatchNorm1d
        t = cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    else:
        raise TypeError(f"no PyTorch equivalent known for {type(m).__name__}")
    state = {k: _t(v) for k, v in m.state_dict().items()}
    t = t.to(next(iter(state.values())).dtype)
    t.load_state_dict(state, strict=True)
    return t


def loss_to_torch(criterion):
    """The ``torch.nn`` loss equivalent to a fastlayers loss."""
    nn = torch.nn
    table = {loss.CrossEntropyLoss: nn.CrossEntropyLoss, loss.NLLLoss: nn.NLLLoss,
             loss.MSELoss: nn.MSELoss, loss.BCELoss: nn.BCELoss,
             loss.BCEWithLogitsLoss: nn.BCEWithLogitsLoss}
    if type(criterion) not in table:
        raise TypeError(f"no PyTorch equivalent known for {type(criterion).__name__}")
    return table[type(criterion)](reduction=criterion.reduction)


def optimizer_to_torch(opt, params):
    """A ``torch.optim`` optimizer over ``params`` with ``opt``'s hyperparameters (fresh state)."""
    d = dict(opt.defaults)
    table = {optim.SGD: torch.optim.SGD, optim.Momentum: torch.optim.SGD,
             optim.RMSprop: torch.optim.RMSprop, optim.Adam: torch.optim.Adam,
             optim.AdamW: torch.optim.AdamW, optim.NAdam: torch.optim.NAdam}
    if type(opt) not in table:
        raise TypeError(f"no PyTorch equivalent known for {type(opt).__name__}")
    return table[type(opt)](params, **d)


class TorchEngine:
    """The PyTorch twin of :class:`fastlayers.train.Engine`: same model (weights copied), loss and
    optimizer hyperparameters; batches arrive as NumPy arrays and are wrapped without copying."""

    name = "pytorch"

    def __init__(self, model, loss_fn, optimizer, schedule="none", total_steps=None,
                 clip_grad=None):
        from fastlayers.train import make_scheduler
        self.model = to_torch(model)
        self.loss_fn = loss_to_torch(loss_fn)
        self.optimizer = optimizer_to_torch(optimizer, self.model.parameters())
        self.scheduler = make_scheduler(torch.optim.lr_scheduler, schedule, self.optimizer,
                                        optimizer.defaults["lr"], total_steps)
        self.clip_grad = clip_grad

    def train_step(self, x, y):
        out = self.model(torch.from_numpy(x))
        loss = self.loss_fn(out, torch.from_numpy(y))
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.item()

    def predict(self, x):
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).argmax(dim=1).numpy()

    def train(self, mode):
        self.model.train(mode)
