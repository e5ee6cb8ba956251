"""End to end: both backends train a 784-128-10 MLP to high held-out accuracy on a learnable
synthetic task, and agree with each other step by step from the same initialisation."""
import numpy as np
import pytest

import fastlayers as fl

D, H, K = 784, 128, 10


def synthetic(n_train=3000, n_test=1000, noise=5.0, seed=0):
    """10 random Gaussian class prototypes in 784-D, samples = prototype + Gaussian noise (5x the
    prototypes' scale per coordinate: no single pixel separates the classes; about 99.9% is reachable)."""
    r = np.random.default_rng(seed)
    protos = r.standard_normal((K, D)) * 0.15
    def draw(n):
        y = r.integers(0, K, n)
        x = protos[y] + r.standard_normal((n, D)) * noise * 0.15
        return x.astype(np.float32), y
    return draw(n_train), draw(n_test)


def make_model(seed=0):
    fl.manual_seed(seed)
    return fl.Sequential(fl.Linear(D, H), fl.ReLU(), fl.Linear(H, K))


def accuracy(model, x, y):
    model.eval()
    pred = model(x).argmax(axis=1)
    model.train()
    return float((pred == y).mean())


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_mlp_trains_to_high_accuracy(backend):
    (xtr, ytr), (xte, yte) = synthetic()
    with fl.use_backend(backend):
        model = make_model()
        model[0].needs_input_grad = False
        loss_fn = fl.CrossEntropyLoss()
        opt = fl.SGD(model.parameters(), lr=0.1, momentum=0.9)
        chance = accuracy(model, xte, yte)
        order = np.random.default_rng(1)
        first = last = None
        for epoch in range(2):
            perm = order.permutation(len(xtr))
            for i in range(0, len(xtr), 64):
                idx = perm[i:i + 64]
                loss = loss_fn(model(xtr[idx]), ytr[idx])
                first = loss if first is None else first
                opt.zero_grad()
                assert model.backward(loss_fn.backward()) is None
                opt.step()
                last = loss
        acc = accuracy(model, xte, yte)
    assert chance < 0.3
    assert acc >= 0.95, acc
    assert last < 0.2 * first
    assert all(np.all(np.isfinite(p.data)) for p in model.parameters())
    assert all(p.data.dtype == np.float32 for p in model.parameters())


@pytest.mark.parametrize("opt_cls,kw", [(fl.SGD, dict(lr=0.1, momentum=0.9)),
                                        (fl.Adam, dict(lr=1e-3))])
def test_backends_agree_after_a_few_steps(opt_cls, kw):
    (xtr, ytr), _ = synthetic(n_train=512, n_test=1)
    trained = {}
    for backend in ("numba", "numpy"):
        with fl.use_backend(backend):
            model = make_model(seed=3)
            loss_fn = fl.CrossEntropyLoss()
            opt = opt_cls(model.parameters(), **kw)
            losses = []
            for i in range(0, 512, 64):
                losses.append(loss_fn(model(xtr[i:i + 64]), ytr[i:i + 64]))
                opt.zero_grad()
                model.backward(loss_fn.backward())
                opt.step()
            trained[backend] = (losses, model.state_dict())
    np.testing.assert_allclose(trained["numba"][0], trained["numpy"][0], rtol=1e-4)
    init = make_model(seed=3).state_dict()
    for k, w in trained["numba"][1].items():
        ref = trained["numpy"][1][k]
        np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-5, err_msg=k)
        assert not np.allclose(w, init[k])            # it moved
