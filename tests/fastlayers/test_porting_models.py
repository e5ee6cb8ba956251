"""Whole PyTorch models ported with fl.from_torch and trained side by side with their originals on
the same batches: a transformer-style block (Embedding, LayerNorm, Linear, GELU and a residual
add, written by hand as a custom module) and a depthwise-separable CNN (a Sequential)."""
import numpy as np
import pytest

import fastlayers as fl

torch = pytest.importorskip("torch")
nn = torch.nn

STEPS = 20


class TorchBlock(nn.Module):
    """Pre-norm MLP block over token embeddings, mean-pooled into a classifier."""

    def __init__(self, vocab, d, classes):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.ln1 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * d, d)
        self.ln2 = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, idx):
        h = self.emb(idx)
        h = h + self.fc2(self.act(self.fc1(self.ln1(h))))
        return self.head(self.ln2(h).mean(dim=1))


class Block(fl.Module):
    """The fastlayers twin of TorchBlock: its layers ported one by one, forward and backward
    written by hand (the residual add sums the two paths' gradients)."""

    def __init__(self, t):
        super().__init__()
        for name, child in t.named_children():
            setattr(self, name, fl.from_torch(child))

    def forward(self, idx):
        h = self.emb(idx)
        h = h + self.fc2(self.act(self.fc1(self.ln1(h))))
        z = self.ln2(h)
        self.save_for_backward(z.shape[1])
        return self.head(z.mean(axis=1))

    def backward(self, g):
        (steps,) = self.saved_tensors
        gz = self.head.backward(g)
        gz = np.repeat(gz[:, None, :] / gz.dtype.type(steps), steps, axis=1)
        gh = self.ln2.backward(gz)
        gh = gh + self.ln1.backward(self.fc1.backward(self.act.backward(self.fc2.backward(gh))))
        self.emb.backward(gh)


def train_side_by_side(ours, theirs, batches, loss, tloss, opt, topt, rtol=1e-4, atol=1e-4):
    """Train both models on the same batches; every step's loss must agree."""
    losses = []
    for x, y in batches:
        value = loss(ours(x), y)
        opt.zero_grad()
        ours.backward(loss.backward())
        opt.step()
        topt.zero_grad()
        tvalue = tloss(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        tvalue.backward()
        topt.step()
        losses.append((value, tvalue.item()))
    ours_l, theirs_l = np.array(losses).T
    np.testing.assert_allclose(ours_l, theirs_l, rtol=rtol, atol=atol)


def test_transformer_block():
    torch.manual_seed(0)
    theirs = TorchBlock(vocab=50, d=16, classes=5)
    ours = Block(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    r = np.random.default_rng(0)
    batches = [(r.integers(0, 50, (8, 12)), r.integers(0, 5, 8)) for _ in range(STEPS)]
    train_side_by_side(
        ours, theirs, batches, fl.CrossEntropyLoss(label_smoothing=0.1),
        nn.CrossEntropyLoss(label_smoothing=0.1),
        fl.AdamW(ours.parameters(), lr=1e-2, weight_decay=0.01),
        torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.01))
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-3, atol=1e-4,
                                   err_msg=k)


def depthwise_separable_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding="same", groups=8), nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16),
        nn.ReLU6(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=16), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_depthwise_separable_cnn():
    torch.manual_seed(1)
    theirs = depthwise_separable_cnn()
    ours = fl.from_torch(theirs)
    r = np.random.default_rng(1)
    batches = [(r.standard_normal((8, 1, 12, 12)).astype(np.float32), r.integers(0, 10, 8))
               for _ in range(STEPS)]
    train_side_by_side(
        ours, theirs, batches, fl.CrossEntropyLoss(), nn.CrossEntropyLoss(),
        fl.SGD(ours.parameters(), lr=0.05, momentum=0.9),
        torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9))
    ours.eval()
    theirs.eval()
    x = batches[0][0]
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-3, atol=1e-4)
