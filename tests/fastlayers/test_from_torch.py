"""fl.from_torch and fl.to_torch: every supported torch.nn layer becomes a fastlayers twin with the
same weights that computes what torch computes (forward, input and parameter gradients, train and
eval), and converts back to the same state; anything else is refused by name."""
import numpy as np
import pytest

import fastlayers as fl
from tests.fastlayers.test_porting_models import train_side_by_side
from tests.fastlayers.test_torch_parity import T, compare_module, rnd

torch = pytest.importorskip("torch")
nn = torch.nn

# (torch module factory, input shape, whether the module holds randomness)
LAYERS = {
    "Linear": (lambda: nn.Linear(5, 4), (3, 5)),
    "Linear-nobias": (lambda: nn.Linear(5, 4, bias=False), (2, 3, 5)),
    "ReLU": (nn.ReLU, (3, 4)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), (3, 4)),
    "Sigmoid": (nn.Sigmoid, (3, 4)),
    "Tanh": (nn.Tanh, (3, 4)),
    "GELU": (nn.GELU, (3, 4)),
    "GELU-tanh": (lambda: nn.GELU(approximate="tanh"), (3, 4)),
    "SiLU": (nn.SiLU, (3, 4)),
    "Hardtanh": (lambda: nn.Hardtanh(-0.5, 2.0), (3, 4)),
    "ReLU6": (nn.ReLU6, (3, 4)),
    "ELU": (lambda: nn.ELU(alpha=0.7), (3, 4)),
    "Softplus": (lambda: nn.Softplus(beta=2.0, threshold=5.0), (3, 4)),
    "Softmax": (lambda: nn.Softmax(dim=1), (3, 4, 2)),
    "LogSoftmax": (lambda: nn.LogSoftmax(dim=-1), (3, 4)),
    "Identity": (nn.Identity, (3, 4)),
    "Flatten": (lambda: nn.Flatten(1, 2), (2, 3, 4, 5)),
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1), (2, 3, 9, 9)),
    "Conv2d-nobias": (lambda: nn.Conv2d(2, 3, (3, 2), bias=False), (2, 2, 6, 5)),
    "Conv2d-depthwise-same": (lambda: nn.Conv2d(4, 8, 3, padding="same", groups=4), (2, 4, 6, 6)),
    "Conv2d-grouped-valid": (lambda: nn.Conv2d(4, 6, 2, padding="valid", groups=2), (2, 4, 5, 5)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 3, 6, 6)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((2, None)), (2, 3, 5, 4)),
    "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d(1), (2, 3, 5, 4)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 7, 7)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(4, momentum=0.2), (6, 4)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3, eps=1e-3, affine=False), (4, 3, 5, 5)),
    "LayerNorm": (lambda: nn.LayerNorm((3, 4), eps=1e-4), (2, 5, 3, 4)),
    "LayerNorm-nobias": (lambda: nn.LayerNorm(4, bias=False), (6, 4)),
    "LayerNorm-noaffine": (lambda: nn.LayerNorm(4, elementwise_affine=False), (6, 4)),
}


def _randomised(t, dtype):
    """``t`` in ``dtype`` with random parameters and running statistics (not the defaults, which
    would hide a weight that is not copied)."""
    t = t.to({np.float32: torch.float32, np.float64: torch.float64}[dtype])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in t.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", list(LAYERS))
def test_twin_computes_what_torch_computes(name, training, dtype, backend_name):
    factory, shape = LAYERS[name]
    theirs = _randomised(factory(), dtype).train(training)
    ours = fl.from_torch(theirs)
    assert ours.training == training
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for p in ours.parameters():
        assert p.dtype == dtype
    compare_module(ours, theirs, rnd(shape, dtype, 1), dtype, backend_name)
    if training:        # running statistics were updated alike
        for k, v in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_round_trip(name):
    theirs = _randomised(LAYERS[name][0](), np.float32)
    ours = fl.from_torch(theirs)
    back = fl.to_torch(ours)
    assert type(back) is type(theirs)
    assert repr(fl.from_torch(back)) == repr(ours)     # (torch keeps an int kernel_size as given)
    for (k, v), (k2, v2) in zip(back.state_dict().items(), theirs.state_dict().items()):
        assert k == k2 and v.dtype == v2.dtype
        assert torch.equal(v, v2)


def test_containers_nest_and_keep_modes():
    theirs = nn.Sequential(
        nn.Linear(4, 6),
        nn.ModuleList([nn.Tanh(), nn.Sequential(nn.Linear(6, 6), nn.ReLU())]),
        nn.ModuleDict({"head": nn.Linear(6, 2), "norm": nn.BatchNorm1d(2)}))
    theirs[1].eval()
    ours = fl.from_torch(theirs)
    assert isinstance(ours[1], fl.ModuleList) and isinstance(ours[2], fl.ModuleDict)
    assert isinstance(ours[1][1], fl.Sequential)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]
    back = fl.to_torch(ours)
    assert repr(back) == repr(theirs)
    assert [m.training for m in back.modules()] == [m.training for m in theirs.modules()]


def test_ported_sequential_trains_like_torch():
    torch.manual_seed(0)
    theirs = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    ours = fl.from_torch(theirs)
    r = np.random.default_rng(0)
    batches = [(r.standard_normal((8, 1, 8, 8)).astype(np.float32), r.integers(0, 10, 8))
               for _ in range(20)]
    train_side_by_side(ours, theirs, batches, fl.CrossEntropyLoss(), nn.CrossEntropyLoss(),
                       fl.Adam(ours.parameters(), lr=1e-2),
                       torch.optim.Adam(theirs.parameters(), lr=1e-2), atol=1e-5)


@pytest.mark.parametrize("freeze", [False, True])
def test_embedding(freeze):
    theirs = nn.Embedding(7, 3, padding_idx=2)
    theirs.weight.requires_grad_(not freeze)
    ours = fl.from_torch(theirs)
    assert (ours.padding_idx, ours.freeze) == (2, freeze)
    idx = np.array([[0, 2, 6], [6, 6, 1]])
    out = ours(idx)
    tout = theirs(T(idx))
    np.testing.assert_array_equal(out, tout.detach().numpy())
    g = rnd(out.shape, np.float32, 3)
    ours.zero_grad()
    ours.backward(g)
    if freeze:
        assert ours.weight.grad is None or not ours.weight.grad.any()
    else:
        tout.backward(T(g))
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-6)
    back = fl.to_torch(ours)
    assert back.weight.requires_grad == (not freeze) and back.padding_idx == 2
    assert torch.equal(back.weight, theirs.weight)


LOSSES = [
    lambda: nn.MSELoss(reduction="sum"), nn.L1Loss, lambda: nn.HuberLoss(delta=0.5),
    lambda: nn.SmoothL1Loss(reduction="none", beta=0.3),
    lambda: nn.CrossEntropyLoss(weight=torch.rand(4, dtype=torch.float64) + 0.5, ignore_index=1, label_smoothing=0.2),
    lambda: nn.NLLLoss(reduction="sum", ignore_index=2),
    lambda: nn.BCELoss(weight=torch.rand(4, dtype=torch.float64)),
    lambda: nn.BCEWithLogitsLoss(pos_weight=torch.rand(4, dtype=torch.float64) + 0.5),
]


@pytest.mark.parametrize("factory", LOSSES)
def test_losses(factory):
    theirs = factory()
    ours = fl.from_torch(theirs)
    name = type(theirs).__name__
    r = np.random.default_rng(0)
    x = r.standard_normal((6, 4))
    if name in ("CrossEntropyLoss", "NLLLoss"):
        target = r.integers(0, 4, 6)
    elif name == "BCELoss":
        x, target = 1 / (1 + np.exp(-x)), r.random((6, 4))
    else:
        target = r.standard_normal((6, 4))
    value = ours(x, target)
    xt = T(x, grad=True)
    tvalue = theirs(xt, T(target))
    np.testing.assert_allclose(value, tvalue.detach().numpy(), rtol=1e-10)
    g = np.ones(np.shape(value)) if theirs.reduction == "none" else 1.0
    tvalue.backward(T(g) if theirs.reduction == "none" else None)
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    back = fl.to_torch(ours)
    assert repr(back) == repr(theirs)
    assert list(back.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


class Custom(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("module,match", [
    (nn.GRU(2, 3), "no equivalent of torch.nn.GRU"),
    (nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.PReLU())), "PReLU at '1.0'"),
    (Custom(), "Custom is a module class of your own.*load_state_dict"),
    (nn.Conv2d(2, 2, 3, padding_mode="reflect"), "padding_mode='reflect'"),
    (nn.MaxPool2d(2, ceil_mode=True), "ceil_mode=True"),
    (nn.AvgPool2d(2, count_include_pad=False), "count_include_pad=False"),
    (nn.Embedding(4, 2, max_norm=1.0), "max_norm=1.0"),
    (nn.Linear(2, 2).half(), "float16.*float32 or float64"),
    ("not a module", "expects a torch.nn.Module"),
])
def test_unsupported_is_refused_by_name(module, match):
    with pytest.raises(TypeError, match=match):
        fl.from_torch(module)


def test_to_torch_refuses_a_custom_module_by_path():
    class Mine(fl.Module):
        pass
    with pytest.raises(TypeError, match="Mine at '1'"):
        fl.to_torch(fl.Sequential(fl.ReLU(), Mine()))
