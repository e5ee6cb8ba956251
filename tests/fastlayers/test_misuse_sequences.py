"""Random sequences of good and bad calls on a model, its loss and its optimizer: a call that raises
changes nothing, so the final state equals that of a twin that replays only the calls that did not
raise. Bad calls must raise (a bad call that succeeds would be a silent no-op or worse)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlayers as fl
from fastlayers import random
from tests.fastlayers.state import fingerprint

f32 = np.float32
N = 6


class Rig:
    def __init__(self, cnn):
        fl.manual_seed(0)
        if cnn:
            self.model = fl.Sequential(fl.Conv2d(1, 3, 3, padding=1), fl.BatchNorm2d(3), fl.ReLU(),
                                       fl.MaxPool2d(2), fl.Dropout(0.3), fl.Flatten(),
                                       fl.Linear(12, 2))
            self.model[0].needs_input_grad = False
            self.x = np.random.default_rng(1).standard_normal((N, 1, 4, 4)).astype(f32)
        else:
            self.model = fl.Sequential(fl.Linear(4, 3), fl.BatchNorm1d(3), fl.ReLU(),
                                       fl.Dropout(0.3), fl.Linear(3, 2))
            self.x = np.random.default_rng(1).standard_normal((N, 4)).astype(f32)
        self.y = np.random.default_rng(2).integers(0, 2, N)
        self.loss = fl.CrossEntropyLoss()
        self.out = np.zeros((N, 2), f32)     # the last forward's output
        self.opt = fl.Adam(self.model.parameters(), lr=0.01)

    def state(self):
        return fingerprint(self.model, self.opt, self.loss, identity=False)


def _forward(r, x, y):
    r.out = r.model(x)
    r.loss(r.out, y)


def _bad_state_dict(r):
    sd = r.opt.state_dict()
    if sd["state"]:
        entry = sd["state"][max(sd["state"])]
        entry["step"] = -1
    else:
        sd["param_groups"][0]["lr"] = -1.0
    return sd


def _bad_module_state(r):
    sd = r.model.state_dict()
    sd[list(sd)[-1]] = np.zeros(7, f32)
    return sd


# name -> (call(rig), expected to raise: True, False, or None when it depends on the history)
CALLS = {
    "forward": (lambda r: _forward(r, r.x, r.y), False),
    "forward-half": (lambda r: _forward(r, r.x[:3], r.y[:3]), False),
    "backward": (lambda r: r.model.backward(r.loss.backward()), None),
    "step": (lambda r: r.opt.step(), False),
    "zero_grad": (lambda r: r.opt.zero_grad(), False),
    "zero_grad_none": (lambda r: r.model.zero_grad(set_to_none=True), False),
    "train": (lambda r: r.model.train(), False),
    "eval": (lambda r: r.model.eval(), False),
    "lr": (lambda r: r.opt.param_groups[0].update(lr=0.05), False),
    "reload-opt": (lambda r: r.opt.load_state_dict(r.opt.state_dict()), False),
    "reload-model": (lambda r: r.model.load_state_dict(r.model.state_dict()), False),
    "bad-input-dtype": (lambda r: r.model(r.x.astype(np.float64)), True),
    "bad-input-shape": (lambda r: r.model(r.x[..., :-1]), True),
    "bad-labels": (lambda r: r.loss(r.out, r.y[:len(r.out)] + 5), True),
    "bad-float-labels": (lambda r: r.loss(r.out, r.y[:len(r.out)].astype(f32)), True),
    "bad-grad-shape": (lambda r: r.model.backward(np.ones((N, 3), f32)), True),
    "bad-loss-grad": (lambda r: r.loss.backward("x"), True),
    "bad-opt-state": (lambda r: r.opt.load_state_dict(_bad_state_dict(r)), True),
    "bad-model-state": (lambda r: r.model.load_state_dict(_bad_module_state(r)), True),
    "bad-group": (lambda r: r.opt.add_param_group({"params": [r.model[0].weight]}), True),
}


def _apply(rig, name):
    """Run one call; True if it raised. The random state is part of what must not change."""
    call, _ = CALLS[name]
    try:
        call(rig)
    except (ValueError, TypeError, KeyError, RuntimeError, IndexError):
        return True
    return False


@pytest.mark.parametrize("cnn", [False, True], ids=["mlp", "cnn"])
@settings(max_examples=30)
@given(names=st.lists(st.sampled_from(sorted(CALLS)), min_size=1, max_size=25))
def test_failed_calls_change_nothing(cnn, names):
    rig = Rig(cnn)
    start = random.get_state()
    good = []
    for name in names:
        before = rig.state()
        raised = _apply(rig, name)
        expected = CALLS[name][1]
        if expected is not None:
            assert raised == expected, f"{name} {'raised' if raised else 'did not raise'}"
        if raised:
            assert rig.state() == before, f"the failed call {name} changed the state"
        else:
            good.append(name)
    end = rig.state()
    twin = Rig(cnn)
    random.set_state(start)
    for name in good:
        assert not _apply(twin, name), f"{name} raised in the replay"
    assert twin.state() == end
