"""fl.save / fl.load: safetensors files with no pickle, nested checkpoints, PyTorch interchange both
ways, atomic writes, clear errors for damaged files, and exact resume from a checkpoint."""
import os

import numpy as np
import pytest

import fastlayers as fl
from fastlayers.models import FLAT_INPUT, build
from fastlayers.runtime import import_torch
from fastlayers.train import Engine, run_epoch

torch = import_torch()
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _trained(name="mlp-bn", steps=3):
    fl.manual_seed(0)
    model = build(name)
    opt = fl.Adam(model.parameters(), lr=1e-3)
    engine = Engine(model, fl.CrossEntropyLoss(), opt)
    shape = (16, 784) if FLAT_INPUT[name] else (16, 1, 28, 28)
    x = np.random.default_rng(0).random(shape, np.float32)
    y = np.random.default_rng(1).integers(0, 10, 16)
    for _ in range(steps):
        engine.train_step(x, y)
    return model, opt, x


def _assert_same(a, b, where="obj"):
    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def test_checkpoint_round_trip(tmp_path):
    model, opt, _ = _trained()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": fl.get_rng_state(),
            "epoch": 2, "best": 0.875, "note": "a/b.c", "none": None, "flag": True,
            "special": [float("nan"), float("inf"), -0.0], "pair": (1, 2.5),
            "scalar": np.float32(1.5), "zero_d": np.array(7, np.int64),
            "same-path": {"x": np.zeros(2)}, "same-path/x": np.ones(2)}
    path = tmp_path / "ckpt.safetensors"
    fl.save(ckpt, path)
    back = fl.load(path)
    expected = dict(ckpt, scalar=np.asarray(ckpt["scalar"]))     # NumPy scalars come back 0-d
    _assert_same(back, expected)
    assert not [p for p in os.listdir(tmp_path) if p != "ckpt.safetensors"]   # no temporary left


def test_no_pickle_in_the_file(tmp_path):
    model, _, _ = _trained("mlp")
    path = tmp_path / "m.safetensors"
    fl.save(model.state_dict(), path)
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    import json
    header = json.loads(data[8:8 + header_len])                  # the safetensors layout
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    assert b"\x80\x04" not in data[:8 + header_len]               # no pickle protocol marker


@needs_torch
@pytest.mark.parametrize("name", ["mlp", "mlp-bn", "cnn"])
def test_a_fastlayers_file_loads_into_pytorch(tmp_path, name):
    from safetensors.torch import load_file

    from fastlayers.torch_bridge import to_torch
    model, _, x = _trained(name)
    twin = to_torch(model)                     # the architecture; its weights are replaced below
    for p in twin.parameters():
        torch.nn.init.zeros_(p)
    path = tmp_path / "m.safetensors"
    fl.save(model.state_dict(), path)
    twin.load_state_dict(load_file(path), strict=True)
    model.eval()
    twin.eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)


@needs_torch
@pytest.mark.parametrize("name", ["mlp-bn", "cnn"])
def test_a_pytorch_file_loads_into_fastlayers(tmp_path, name):
    from safetensors.torch import save_file

    from fastlayers.torch_bridge import to_torch
    model, _, x = _trained(name)
    twin = to_torch(model)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        twin.train()
        twin(torch.from_numpy(x))              # moves the running statistics
    path = tmp_path / "torch.safetensors"
    save_file(twin.state_dict(), path)
    model.load_state_dict(fl.load(path))
    model.eval()
    twin.eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("damage", ["truncated", "header", "random", "empty", "text", "metadata"])
def test_damaged_files_raise_naming_the_file(tmp_path, damage):
    model, _, _ = _trained("mlp")
    path = tmp_path / "m.safetensors"
    fl.save({"model": model.state_dict(), "epoch": 1}, path)
    data = path.read_bytes()
    if damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "header":
        data = data[:8] + b"[" + data[9:]            # the JSON header no longer parses
    elif damage == "random":
        data = np.random.default_rng(0).integers(0, 256, 4096).astype(np.uint8).tobytes()
    elif damage == "empty":
        data = b""
    elif damage == "text":
        data = b"just some text, not a checkpoint\n" * 10
    elif damage == "metadata":
        assert b'\\"format\\": 1' in data                    # inside the escaped metadata
        data = data.replace(b'\\"format\\": 1', b'\\"format\\": 9')
    path.write_bytes(data)
    with pytest.raises(fl.CheckpointError, match="m.safetensors"):
        fl.load(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        fl.load("/nonexistent/dir/m.safetensors")


def test_a_failed_save_leaves_the_old_file(tmp_path):
    path = tmp_path / "m.safetensors"
    fl.save({"w": np.ones(3)}, path)
    before = path.read_bytes()
    for bad in ({"w": np.ones(3), "f": lambda: 0}, {"w": np.array(["a", "b"])}, {(1, 2): 3},
                {"w": np.array([object()])}):
        with pytest.raises(TypeError, match="save"):
            fl.save(bad, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_a_mismatched_checkpoint_leaves_model_and_optimizer_untouched(tmp_path):
    from tests.fastlayers.state import fingerprint
    model, opt, _ = _trained("mlp")
    other, other_opt, _ = _trained("mlp-bn")
    path = tmp_path / "other.safetensors"
    fl.save({"model": other.state_dict(), "optimizer": other_opt.state_dict()}, path)
    ckpt = fl.load(path)
    before = fingerprint(model, opt)
    with pytest.raises(KeyError):
        model.load_state_dict(ckpt["model"])
    with pytest.raises(ValueError):
        opt.load_state_dict(ckpt["optimizer"])
    assert fingerprint(model, opt) == before


def test_rng_state_round_trip_replays_the_same_draws(tmp_path):
    fl.manual_seed(5)
    fl.Dropout(0.5)(np.ones(10, np.float32))
    state = fl.get_rng_state()
    path = tmp_path / "rng.safetensors"
    fl.save({"rng": state}, path)
    first = (fl.random.generator().random(3), fl.Dropout(0.5)(np.ones(10, np.float32)))
    fl.manual_seed(99)
    fl.set_rng_state(fl.load(path)["rng"])
    second = (fl.random.generator().random(3), fl.Dropout(0.5)(np.ones(10, np.float32)))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_exact_resume_from_a_checkpoint(tmp_path):
    """4 epochs straight == 2 epochs, a checkpoint, fresh objects loaded from it, 2 more epochs:
    bitwise the same weights, buffers and optimizer state (shuffling and dropout included)."""
    ds = fl.load_dataset("mnist-10k")
    x, y = ds.x_train[:600], ds.y_train[:600]

    def fresh():
        fl.manual_seed(0)
        model = build("mlp-bn")
        opt = fl.Adam(model.parameters(), lr=1e-3)
        loader = fl.DataLoader(x, y, batch_size=128, shuffle=True, flatten=True)
        return model, opt, Engine(model, fl.CrossEntropyLoss(), opt), loader

    model, opt, engine, loader = fresh()
    for _ in range(4):
        run_epoch(engine, loader)
    straight = (model.state_dict(), opt.state_dict())

    model, opt, engine, loader = fresh()
    for _ in range(2):
        run_epoch(engine, loader)
    path = tmp_path / "ckpt.safetensors"
    fl.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
             "rng": fl.get_rng_state(), "epoch": 2}, path)
    fl.manual_seed(123)                        # whatever happens in between
    model, opt, engine, loader = fresh()
    ckpt = fl.load(path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    fl.set_rng_state(ckpt["rng"])
    for _ in range(ckpt["epoch"], 4):
        run_epoch(engine, loader)
    _assert_same((model.state_dict(), opt.state_dict()), straight)
