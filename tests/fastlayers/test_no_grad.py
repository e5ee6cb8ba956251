"""fastlayers.no_grad: the same outputs and losses, no caches kept (so less memory at the peak), a
clear error from a backward after it, and the mode restored after the block or the decorated call."""
import tracemalloc

import numpy as np
import pytest

import fastlayers as fl
from fastlayers.models import FLAT_INPUT, build
from tests.fastlayers.test_losses import CLASSES, case


def _batch(name, n=16):
    shape = (n, 784) if FLAT_INPUT[name] else (n, 1, 28, 28)
    return np.random.default_rng(0).random(shape, np.float32)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", ["mlp", "mlp-bn", "cnn"])
def test_same_outputs_and_no_caches(backend_name, name, training):
    fl.manual_seed(0)
    model = build(name).train(training)
    model[0].needs_input_grad = False          # the cnn's first block fuses as in training
    x = _batch(name)
    state = fl.get_rng_state()                 # the dropout masks of the forward
    expected = model(x)
    after = model.state_dict()                 # running statistics moved by a training forward
    fl.manual_seed(0)
    twin = build(name).train(training)
    twin[0].needs_input_grad = False
    fl.set_rng_state(state)
    with fl.no_grad():
        got = twin(x)
    np.testing.assert_array_equal(got, expected)
    for (k, a), b in zip(twin.state_dict().items(), after.values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    for m in twin.modules():
        assert m.__dict__["_cache"] in (None, "kept nothing (no_grad)"), type(m).__name__
    with pytest.raises(RuntimeError, match="no_grad"):
        twin.backward(np.ones_like(got))


@pytest.mark.parametrize("name", list(CLASSES))
def test_losses_same_value_no_gradient(backend_name, name):
    x, t, _ = case(name)
    loss = CLASSES[name]()
    expected = loss(x, t)
    with fl.no_grad():
        assert loss(x, t) == expected
    with pytest.raises(RuntimeError, match="no_grad"):
        loss.backward()


def test_a_single_layer_and_the_training_step_after_it():
    layer = fl.Linear(4, 3)
    x = np.ones((2, 4), np.float32)
    with fl.no_grad():
        layer(x)
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward(np.ones((2, 3), np.float32))
    layer(x)                                   # outside: a normal forward and backward again
    layer.backward(np.ones((2, 3), np.float32))
    assert np.all(layer.bias.grad == 2)


def test_decorator_nesting_and_set_grad_enabled():
    @fl.no_grad()
    def infer():
        return fl.is_grad_enabled()

    assert fl.is_grad_enabled() and infer() is False and fl.is_grad_enabled()
    with fl.no_grad():
        with fl.no_grad():
            assert not fl.is_grad_enabled()
        assert not fl.is_grad_enabled()
        with fl.set_grad_enabled(True):
            assert fl.is_grad_enabled()
        assert not fl.is_grad_enabled()
    assert fl.is_grad_enabled()
    with pytest.raises(ValueError):
        with fl.no_grad():
            raise ValueError("inside")
    assert fl.is_grad_enabled()                # restored after an exception too
    fl.set_grad_enabled(False)
    assert not fl.is_grad_enabled()
    fl.set_grad_enabled(True)
    with pytest.raises(TypeError, match="mode"):
        fl.set_grad_enabled(1)
    assert fl.is_grad_enabled()


def test_peak_memory_is_lower_without_caches():
    fl.manual_seed(0)
    model = build("mlp-bn").eval()
    x = _batch("mlp-bn", n=512)
    model(x)                                   # compile outside the measurement

    def peak(no_grad):
        model._cache = None
        for m in model.modules():
            object.__setattr__(m, "_cache", None)
        tracemalloc.start()
        if no_grad:
            with fl.no_grad():
                model(x)
        else:
            model(x)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top
    assert peak(True) < 0.8 * peak(False)
