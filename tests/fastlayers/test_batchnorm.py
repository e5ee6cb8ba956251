"""BatchNorm1d/2d and BatchNorm: gradients, PyTorch parity, fusion, train/eval, bad input."""
import numpy as np
import pytest

from fastlayers import backend
from fastlayers.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from fastlayers.fused import NormActivation
from fastlayers.gradcheck import gradcheck
from fastlayers.linear import Linear
from fastlayers.module import Sequential
from fastlayers.batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d


def _random_affine(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features) * rng.choice([-1, 1])
    layer.bias.data[...] = rng.standard_normal(layer.num_features)
    return layer


# ----------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("cls, shape", [(BatchNorm1d, (5, 3)), (BatchNorm1d, (3, 2, 4)),
                                        (BatchNorm2d, (3, 2, 2, 3)), (BatchNorm, (2, 2, 3, 2))])
@pytest.mark.parametrize("act", [None, ReLU, LeakyReLU, Tanh])
def test_gradcheck_train(cls, shape, act):
    layer = _random_affine(cls(shape[1], dtype=np.float64))
    model = layer if act is None else Sequential(layer, act())
    x = np.random.default_rng(1).standard_normal(shape)
    result = gradcheck(model, x)
    assert result.ok, result


@pytest.mark.parametrize("track", [True, False])
def test_gradcheck_eval_and_untracked(track):
    layer = _random_affine(BatchNorm1d(3, affine=True, track_running_stats=track,
                                       dtype=np.float64))
    if track:
        layer.running_mean[...] = [0.3, -0.2, 1.0]
        layer.running_var[...] = [0.5, 2.0, 1.5]
    layer.eval()
    result = gradcheck(Sequential(layer, ReLU()), np.random.default_rng(2).standard_normal((4, 3)))
    assert result.ok, result


def test_gradcheck_not_affine():
    layer = BatchNorm2d(2, affine=False, dtype=np.float64)
    assert list(layer.parameters()) == []
    assert gradcheck(layer, np.random.default_rng(3).standard_normal((2, 2, 3, 2))).ok


# ----------------------------------------------------------------------------------- PyTorch parity

def _torch_pair(cls, shape, momentum, affine=True, track=True, act=None):
    torch = pytest.importorskip("torch")
    tcls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d}[2 if len(shape) == 4 else 1]
    ours = cls(shape[1], momentum=momentum, affine=affine, track_running_stats=track)
    theirs = tcls(shape[1], momentum=momentum, affine=affine, track_running_stats=track)
    if affine:
        _random_affine(ours, seed=len(shape))
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(ours.weight.data))
            theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    tmodel = theirs if act is None else torch.nn.Sequential(theirs, act[1]())
    model = ours if act is None else Sequential(ours, act[0]())
    return torch, ours, theirs, model, tmodel


def _check_step(torch, ours, theirs, model, tmodel, x, g, train):
    model.train(train)
    tmodel.train(train)
    model.zero_grad()
    tmodel.zero_grad()
    y = model(x)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tmodel(tx)
    ty.backward(torch.from_numpy(g))
    dx = model.backward(g)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    if ours.affine:
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    if ours.track_running_stats:
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5,
                                   atol=1e-6)
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


@pytest.mark.parametrize("cls, shape", [(BatchNorm1d, (16, 5)), (BatchNorm1d, (8, 4, 7)),
                                        (BatchNorm2d, (6, 3, 5, 4)), (BatchNorm, (16, 70)),
                                        (BatchNorm, (4, 3, 6, 5))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_torch_over_train_steps_then_eval(cls, shape, momentum):
    torch, ours, theirs, model, tmodel = _torch_pair(cls, shape, momentum)
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        _check_step(torch, ours, theirs, model, tmodel, x, rng.standard_normal(shape).astype(
            np.float32), train=True)
    for n in (shape[0], 1):  # batch 1 is fine in eval
        x = rng.standard_normal((n,) + shape[1:]).astype(np.float32)
        _check_step(torch, ours, theirs, model, tmodel, x, rng.standard_normal(x.shape).astype(
            np.float32), train=False)


@pytest.mark.parametrize("act", ["relu", "leaky", "sigmoid"])
@pytest.mark.parametrize("shape", [(32, 9), (4, 3, 5, 5)])
def test_fused_activation_matches_torch(act, shape):
    torch = pytest.importorskip("torch")
    pair = {"relu": (ReLU, torch.nn.ReLU), "sigmoid": (Sigmoid, torch.nn.Sigmoid),
            "leaky": (lambda: LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2))}[act]
    cls = BatchNorm2d if len(shape) == 4 else BatchNorm1d
    torch, ours, theirs, model, tmodel = _torch_pair(cls, shape, 0.1, act=pair)
    rng = np.random.default_rng(5)
    for train in (True, True, False):
        x = rng.standard_normal(shape).astype(np.float32)
        _check_step(torch, ours, theirs, model, tmodel, x,
                    rng.standard_normal(shape).astype(np.float32), train=train)


@pytest.mark.parametrize("affine, track", [(False, True), (True, False), (False, False)])
def test_options_match_torch(affine, track):
    torch, ours, theirs, model, tmodel = _torch_pair(BatchNorm1d, (10, 4, 3), 0.3, affine, track)
    rng = np.random.default_rng(6)
    for train in (True, True, False):
        x = rng.standard_normal((10, 4, 3)).astype(np.float32)
        _check_step(torch, ours, theirs, model, tmodel, x,
                    rng.standard_normal(x.shape).astype(np.float32), train=train)


def test_numba_and_numpy_backends_agree():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out = []
    for name in ("numba", "numpy"):
        layer = _random_affine(BatchNorm2d(3))
        model = Sequential(layer, ReLU())
        with backend.use_backend(name):
            y = model(x)
            dx = model.backward(g)
        out.append((y, dx, layer.weight.grad, layer.bias.grad, layer.running_mean,
                    layer.running_var))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_large_mean_small_spread():
    x = (1e4 + 1e-2 * np.random.default_rng(8).standard_normal((64, 4))).astype(np.float32)
    y = BatchNorm1d(4, eps=1e-12)(x)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(0)) / x64.std(0)
    np.testing.assert_allclose(y, ref, atol=1e-4)


# -------------------------------------------------------------------------------- module behaviour

def test_buffers_state_dict_repr_and_dtype():
    layer = BatchNorm2d(4)
    assert sorted(layer.state_dict()) == ["bias", "num_batches_tracked", "running_mean",
                                          "running_var", "weight"]
    assert sorted(n for n, _ in layer.named_buffers()) == ["num_batches_tracked", "running_mean",
                                                           "running_var"]
    assert repr(layer) == ("BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, "
                           "track_running_stats=True)")
    assert BatchNorm1d(3, track_running_stats=False).state_dict().keys() == {"weight", "bias"}
    layer.double()
    assert layer.running_mean.dtype == np.float64 and layer.num_batches_tracked.dtype == np.int64
    assert layer(np.ones((2, 4, 2, 2))).dtype == np.float64
    layer.reset_running_stats()
    assert int(layer.num_batches_tracked) == 0 and (layer.running_var == 1).all()


def test_momentum_none_is_cumulative_average():
    layer = BatchNorm1d(2, momentum=None)
    rng = np.random.default_rng(9)
    batches = [rng.standard_normal((6, 2)).astype(np.float32) * (i + 1) for i in range(3)]
    for x in batches:
        layer(x)
    np.testing.assert_allclose(layer.running_mean, np.mean([b.mean(0) for b in batches], axis=0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], axis=0), rtol=1e-5)


def test_train_eval_switching_through_sequential():
    from fastlayers.dropout import Dropout
    from fastlayers.random import manual_seed
    manual_seed(0)
    model = Sequential(Linear(6, 5), BatchNorm1d(5), ReLU(), Dropout(0.5), Linear(5, 2))
    x = np.random.default_rng(10).standard_normal((16, 6)).astype(np.float32)
    y1, y2 = model(x), model(x)
    assert not np.allclose(y1, y2)  # fresh dropout mask every call
    assert int(model[1].num_batches_tracked) == 2
    saved = model[1].running_mean.copy()
    model.eval()
    assert not any(m.training for m in model.modules())
    e1, e2 = model(x), model(x)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(model[1].running_mean, saved)  # eval does not update
    assert int(model[1].num_batches_tracked) == 2
    bn = model[1]
    h = x @ model[0].weight.data.T + model[0].bias.data
    h = (h - bn.running_mean) / np.sqrt(bn.running_var + bn.eps) * bn.weight.data + bn.bias.data
    ref = np.maximum(h, 0) @ model[4].weight.data.T + model[4].bias.data
    np.testing.assert_allclose(e1, ref, rtol=1e-5, atol=1e-5)
    assert model.backward(np.ones_like(e1)).shape == x.shape
    model.train()
    assert not np.allclose(model(x), e1)


# ----------------------------------------------------------------------------------- bad input

def _state(layer):
    return {k: v.copy() for k, v in layer.state_dict().items()}


def _unchanged(layer, before):
    after = layer.state_dict()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v)


@pytest.mark.parametrize("cls, x", [(BatchNorm1d, np.ones((1, 3), np.float32)),
                                    (BatchNorm1d, np.ones((1, 3, 1), np.float32)),
                                    (BatchNorm2d, np.ones((1, 3, 1, 1), np.float32)),
                                    (BatchNorm, np.ones((1, 3), np.float32))])
def test_one_value_per_channel_in_training(cls, x):
    layer = cls(3)
    before = _state(layer)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        layer(x)
    _unchanged(layer, before)
    layer.eval()
    assert layer(x).shape == x.shape  # fine with running statistics
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        cls(3, track_running_stats=False).eval()(x)  # eval without running stats uses the batch


@pytest.mark.parametrize("cls, x, match", [
    (BatchNorm1d, np.ones((4, 5), np.float32), "3 channels in dimension 1"),
    (BatchNorm1d, np.ones((4, 2, 5), np.float32), "3 channels in dimension 1"),
    (BatchNorm2d, np.ones((4, 4, 2, 2), np.float32), "3 channels in dimension 1"),
    (BatchNorm1d, np.ones((4, 3, 2, 2), np.float32), "2-D or 3-D"),
    (BatchNorm1d, np.ones(3, np.float32), "2-D or 3-D"),
    (BatchNorm2d, np.ones((4, 3, 2), np.float32), "4-D"),
    (BatchNorm, np.ones((4, 3, 2), np.float32), "2-D or 4-D"),
])
def test_wrong_shape(cls, x, match):
    layer = cls(3)
    before = _state(layer)
    with pytest.raises(ValueError, match=match):
        layer(x)
    _unchanged(layer, before)


def test_wrong_type_and_dtype():
    layer = BatchNorm1d(3)
    before = _state(layer)
    with pytest.raises(TypeError, match="float64 but the parameters are float32"):
        layer(np.ones((4, 3)))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        layer([[1.0, 2.0, 3.0]] * 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        layer(np.ones((4, 3), np.int64))
    with pytest.raises(TypeError, match="activation"):
        NormActivation(layer, Linear(3, 3))
    _unchanged(layer, before)


def test_backward_errors():
    layer = BatchNorm1d(3)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((4, 3), np.float32))
    layer(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(4, 3\)"):
        layer.backward(np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="grad_output"):
        layer.backward(np.ones((4, 3)))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_features=0), ValueError, "num_features must be >= 1"),
    (dict(num_features=2.5), TypeError, "num_features must be an integer"),
    (dict(num_features=True), TypeError, "num_features must be an integer"),
    (dict(num_features=3, eps=0.0), ValueError, "eps must be in"),
    (dict(num_features=3, eps=-1e-5), ValueError, "eps must be in"),
    (dict(num_features=3, momentum=1.5), ValueError, "momentum must be in"),
    (dict(num_features=3, momentum=-0.1), ValueError, "momentum must be in"),
    (dict(num_features=3, momentum="0.1"), TypeError, "momentum must be a finite real"),
    (dict(num_features=3, momentum=float("nan")), TypeError, "momentum must be a finite real"),
    (dict(num_features=3, affine=1), TypeError, "affine must be a bool"),
    (dict(num_features=3, track_running_stats="yes"), TypeError, "track_running_stats must be"),
    (dict(num_features=3, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
])
@pytest.mark.parametrize("cls", [BatchNorm1d, BatchNorm2d, BatchNorm])
def test_bad_constructor_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


# --------------------------------------------------- BatchNorm2d + ReLU + MaxPool2d(2), fused in training

def _bn_pool(act=ReLU, dtype=np.float32, pool=2):
    from fastlayers.pooling import MaxPool2d
    layer = _random_affine(BatchNorm2d(3, dtype=dtype), seed=11)
    return layer, Sequential(layer, act(), MaxPool2d(pool))


def test_bn_relu_maxpool_is_fused_in_training_only():
    layer, model = _bn_pool()
    x = np.random.default_rng(12).standard_normal((4, 3, 6, 6)).astype(np.float32)
    assert model(x).shape == (4, 3, 3, 3)
    assert model.steps == [tuple(model)]        # one step: activation and pool folded in
    model.eval()
    assert model(x).shape == (4, 3, 3, 3)
    # eval: running statistics, the pool on its own
    assert model.steps == [(layer, model[1]), (model[2],)]
    _, model3 = _bn_pool(pool=3)
    model3(x)
    assert len(model3.steps) == 2               # only 2x2 stride-2 pools fuse


@pytest.mark.parametrize("act", [ReLU, lambda: LeakyReLU(0.1)])
def test_gradcheck_bn_relu_maxpool(act):
    _, model = _bn_pool(act, np.float64)
    x = np.random.default_rng(13).standard_normal((3, 3, 4, 5))
    result = gradcheck(model, x)
    assert model.steps == [tuple(model)]
    assert result.ok, result


@pytest.mark.parametrize("shape", [(6, 3, 8, 8), (5, 3, 7, 5)])
@pytest.mark.parametrize("act", ["relu", "leaky"])
def test_bn_relu_maxpool_matches_torch_over_train_steps_then_eval(backend_name, shape, act):
    torch = pytest.importorskip("torch")
    from fastlayers.pooling import MaxPool2d
    pair = {"relu": (ReLU, torch.nn.ReLU),
            "leaky": (lambda: LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2))}[act]
    torch, ours, theirs, model, tmodel = _torch_pair(BatchNorm2d, shape, 0.1, act=pair)
    model.append(MaxPool2d(2))
    tmodel.append(torch.nn.MaxPool2d(2))
    rng = np.random.default_rng(14)
    out_shape = shape[:2] + (shape[2] // 2, shape[3] // 2)
    for train in (True, True, True, False):
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        _check_step(torch, ours, theirs, model, tmodel, x,
                    rng.standard_normal(out_shape).astype(np.float32), train=train)


def test_bn_relu_maxpool_bad_input_leaves_state_untouched():
    layer, model = _bn_pool()
    before = {k: np.copy(v) for k, v in layer.state_dict().items()}
    with pytest.raises(ValueError, match="larger than the padded input"):
        model(np.zeros((4, 3, 1, 6), np.float32))       # the pool's own check, before any kernel
    with pytest.raises(ValueError, match="channels"):
        model(np.zeros((4, 2, 6, 6), np.float32))
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    model(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3, 2, 2\)"):
        model.backward(np.ones((2, 3, 4, 4), np.float32))
