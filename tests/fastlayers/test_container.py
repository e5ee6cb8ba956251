"""ModuleList and ModuleDict against torch.nn's: the same operations give the same state_dict keys,
parameters, modes and errors; a custom module that holds them trains like its torch twin."""
import numpy as np
import pytest

import fastlayers as fl
from tests.fastlayers.test_porting_models import train_side_by_side

torch = pytest.importorskip("torch")
nn = torch.nn


def keys(m):
    return list(m.state_dict())


def pair_of_lists():
    """A fastlayers ModuleList and the torch one converted from it (same weights)."""
    ours = fl.ModuleList([fl.Linear(2, 3), fl.ReLU(), fl.Linear(3, 4), fl.Linear(4, 1)])
    return ours, fl.to_torch(ours)


@pytest.mark.parametrize("op", [
    lambda m, L: m.append(L(1, 2)),
    lambda m, L: m.extend([L(1, 2), L(2, 2)]),
    lambda m, L: m.insert(1, L(5, 5)),
    lambda m, L: m.__delitem__(0),
    lambda m, L: m.__delitem__(-2),
    lambda m, L: m.__delitem__(slice(1, 3)),
    lambda m, L: m.__setitem__(2, L(7, 7)),
    lambda m, L: m.__setitem__(-1, L(7, 7)),
    lambda m, L: m.pop(1),
    lambda m, L: m.__iadd__([L(1, 1)]),
])
def test_module_list_operations_give_torchs_keys(op):
    ours, theirs = pair_of_lists()
    op(ours, fl.Linear)
    op(theirs, nn.Linear)
    assert keys(ours) == keys(theirs)
    assert len(ours) == len(theirs)
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]


def test_module_list_insert_follows_list_insert():
    # (torch's insert registers keys '-1' or '100' for these; list.insert's positions are kept)
    for index in (-1, 100, -100):
        ours, _ = pair_of_lists()
        mods = list(ours)
        new = fl.Linear(5, 5)
        ours.insert(index, new)
        mods.insert(index, new)
        assert list(ours) == mods
        assert list(ours._modules) == [str(i) for i in range(5)]


def test_module_list_indexing():
    ours, theirs = pair_of_lists()
    assert ours[-1] is list(ours)[3]
    sub = ours[1:3]
    assert isinstance(sub, fl.ModuleList) and sub[1] is ours[2]
    assert keys(sub) == keys(theirs[1:3])
    both = ours[:1] + ours[3:]
    assert isinstance(both, fl.ModuleList) and len(both) == 2 and both[1] is ours[3]
    assert keys(both) == keys(theirs[:1] + theirs[3:])


@pytest.mark.parametrize("call,exc,match", [
    (lambda m: m.append(np.zeros(2)), TypeError, "Module instances"),
    (lambda m: m.extend([fl.ReLU(), 3]), TypeError, "Module instances"),
    (lambda m: m.extend(fl.ReLU()), TypeError, "iterable of modules"),
    (lambda m: m[4], IndexError, "out of range"),
    (lambda m: m[-5], IndexError, "out of range"),
    (lambda m: m["0"], TypeError, "integers or slices"),
    (lambda m: m.__setitem__(4, fl.ReLU()), IndexError, "out of range"),
    (lambda m: m.__setitem__(0, "relu"), TypeError, "Module instances"),
    (lambda m: m.insert(0, None), TypeError, "Module instances"),
    (lambda m: m(np.zeros(2)), NotImplementedError, "no forward"),
    (lambda m: m.backward(np.zeros(2)), NotImplementedError, "no backward"),
])
def test_module_list_errors_change_nothing(call, exc, match):
    ours, _ = pair_of_lists()
    before = (keys(ours), list(ours))
    with pytest.raises(exc, match=match):
        call(ours)
    assert (keys(ours), list(ours)) == before


def pair_of_dicts():
    ours = fl.ModuleDict({"enc": fl.Linear(2, 3), "act": fl.Tanh(), "dec": fl.Linear(3, 2)})
    return ours, fl.to_torch(ours)


@pytest.mark.parametrize("op", [
    lambda d, L: d.__setitem__("extra", L(1, 1)),
    lambda d, L: d.__setitem__("enc", L(4, 4)),
    lambda d, L: d.__delitem__("act"),
    lambda d, L: d.pop("enc"),
    lambda d, L: d.update({"dec": L(5, 5), "new": L(2, 2)}),
    lambda d, L: d.update([("z", L(1, 3)), ("a", L(3, 1))]),
    lambda d, L: d.clear(),
])
def test_module_dict_operations_give_torchs_keys(op):
    ours, theirs = pair_of_dicts()
    op(ours, fl.Linear)
    op(theirs, nn.Linear)
    assert keys(ours) == keys(theirs)
    assert list(ours) == list(theirs) == list(ours.keys())
    assert [type(v).__name__ for v in ours.values()] == [type(v).__name__ for v in theirs.values()]
    assert ("enc" in ours) == ("enc" in theirs)


@pytest.mark.parametrize("call,exc,match", [
    (lambda d: d.__setitem__("a.b", fl.ReLU()), KeyError, "without '.'"),
    (lambda d: d.__setitem__("", fl.ReLU()), KeyError, "non-empty"),
    (lambda d: d.__setitem__(1, fl.ReLU()), TypeError, "strings"),
    (lambda d: d.__setitem__("training", fl.ReLU()), KeyError, "already an attribute"),
    (lambda d: d.__setitem__("x", 5), TypeError, "Module instances"),
    (lambda d: d.update({"ok": fl.ReLU(), "bad.key": fl.ReLU()}), KeyError, "without '.'"),
    (lambda d: d.update([("ok", fl.ReLU()), ("x",)]), TypeError, "pair"),
    (lambda d: d.update(3), TypeError, "mapping"),
    (lambda d: d["missing"], KeyError, "missing"),
    (lambda d: d.__delitem__("missing"), KeyError, "missing"),
])
def test_module_dict_errors_change_nothing(call, exc, match):
    ours, _ = pair_of_dicts()
    before = (keys(ours), list(ours.items()))
    with pytest.raises(exc, match=match):
        call(ours)
    assert (keys(ours), list(ours.items())) == before


class Net(fl.Module):
    """A residual MLP over a ModuleList of blocks, with heads in a ModuleDict: forward and
    backward written by hand."""

    def __init__(self, d, depth):
        super().__init__()
        self.blocks = fl.ModuleList(fl.Sequential(fl.Linear(d, d), fl.Tanh()) for _ in range(depth))
        self.heads = fl.ModuleDict({"out": fl.Linear(d, 3)})

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.heads["out"](x)

    def backward(self, g):
        g = self.heads["out"].backward(g)
        for block in reversed(list(self.blocks)):
            g = g + block.backward(g)
        return g


class TorchNet(nn.Module):
    def __init__(self, d, depth):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.Tanh()) for _ in range(depth))
        self.heads = nn.ModuleDict({"out": nn.Linear(d, 3)})

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.heads["out"](x)


def test_custom_module_over_containers_trains_like_torch():
    fl.manual_seed(0)
    ours, theirs = Net(6, 3), TorchNet(6, 3)
    assert keys(ours) == keys(theirs)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    r = np.random.default_rng(0)
    batches = [(r.standard_normal((8, 6)).astype(np.float32), r.integers(0, 3, 8))
               for _ in range(10)]
    train_side_by_side(ours, theirs, batches, fl.CrossEntropyLoss(), nn.CrossEntropyLoss(),
                       fl.SGD(ours.parameters(), lr=0.1),
                       torch.optim.SGD(theirs.parameters(), lr=0.1), rtol=1e-5, atol=1e-6)
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v, theirs.state_dict()[k].numpy(), rtol=1e-5, atol=1e-6)


def test_modes_and_parameters_reach_entries():
    net = Net(4, 2)
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    assert len(list(net.parameters())) == 2 * 2 + 2
    net.zero_grad()
    assert all((p.grad == 0).all() for p in net.parameters())


def test_delattr_unregisters():
    net = Net(4, 1)
    del net.heads
    assert not any(k.startswith("heads") for k in keys(net))
    with pytest.raises(AttributeError):
        net.heads
