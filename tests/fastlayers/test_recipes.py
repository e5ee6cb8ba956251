"""Augmentation transforms, the engines that apply them, and the speed run's recipes: seeded and
thread-count independent draws, checkpointed streams, checks before any draw, the PyTorch twin's
identical batches, recipe options with overrides, and exact resumes."""
import io

import numpy as np
import pytest

import fastlayers as fl
from fastlayers import mnist, recipes, transforms
from fastlayers.data import write_idx
from fastlayers.train import Engine
from tests.conftest import forced_build


def _batch(n=70, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(np.float32)


def _crop_flip():
    return transforms.Compose([transforms.RandomCrop(28, padding=3),
                               transforms.RandomHorizontalFlip()])


def test_a_seed_fixes_the_draws_on_any_thread_count():
    x = _batch()
    outs = []
    for threads in (1, 2):
        fl.set_num_threads(threads)
        fl.manual_seed(4)
        t = _crop_flip()
        with forced_build("parallel"):
            outs.append([t(x), t(x)])
    fl.set_num_threads(None)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(outs[0][0], outs[0][1])     # each call draws afresh
    fl.manual_seed(5)
    assert not np.array_equal(_crop_flip()(x), outs[0][0])


def test_transforms_keep_their_own_stream():
    x = _batch()
    fl.manual_seed(1)
    t = transforms.RandomHorizontalFlip()
    counter = fl.random.get_counter()
    t(x)
    assert fl.random.get_counter() == counter              # dropout's stream is untouched
    fl.manual_seed(1)
    a, b = transforms.RandomCrop(28, 2), transforms.RandomCrop(28, 2)
    assert not np.array_equal(a(x), b(x))                  # two transforms, two streams


def test_state_dict_resumes_the_stream_through_a_file(tmp_path):
    x = _batch()
    fl.manual_seed(2)
    t = _crop_flip()
    t(x)
    fl.save({"augment": t.state_dict()}, tmp_path / "s.st")
    expected = t(x)
    fl.manual_seed(99)
    other = _crop_flip()
    other.load_state_dict(fl.load(tmp_path / "s.st")["augment"])
    np.testing.assert_array_equal(other(x), expected)


@pytest.mark.parametrize("make, x, error, match", [
    (lambda: transforms.RandomCrop(29, padding=0), _batch(3), ValueError, "larger than the padded"),
    (lambda: transforms.RandomCrop(28, 1), _batch(3)[:, 0], ValueError, "4-D"),
    (lambda: transforms.RandomHorizontalFlip(), _batch(3).astype(np.int32), TypeError, "dtype"),
    (lambda: transforms.RandomHorizontalFlip(), [[1.0]], TypeError, "numpy.ndarray"),
])
def test_bad_input_is_refused_before_any_draw(make, x, error, match):
    t = make()
    with pytest.raises(error, match=match):
        t(x)
    assert t.calls == 0


@pytest.mark.parametrize("make, error, match", [
    (lambda: transforms.RandomCrop(0), ValueError, "size must be >= 1"),
    (lambda: transforms.RandomCrop((28, 28, 1)), ValueError, "pair"),
    (lambda: transforms.RandomCrop(28, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: transforms.RandomCrop(28.0), TypeError, "size must be an integer"),
    (lambda: transforms.RandomHorizontalFlip(1.5), ValueError, r"p must be in \[0, 1\]"),
    (lambda: transforms.Compose([transforms.RandomHorizontalFlip(), 3]), TypeError,
     r"transforms\[1\]"),
])
def test_bad_arguments_name_themselves(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_bad_state_changes_nothing():
    fl.manual_seed(3)
    t = _crop_flip()
    t(_batch(2))
    before = t.state_dict()
    bad = dict(before)
    bad["1"] = {"seed": 1, "calls": -1}
    with pytest.raises(ValueError, match="calls"):
        t.load_state_dict(bad)
    with pytest.raises(TypeError, match="keys"):
        t.load_state_dict({"0": before["0"]})
    assert t.state_dict() == before


def test_compose_spreads_a_nested_compose():
    inner = _crop_flip()
    outer = transforms.Compose([inner, transforms.RandomCrop(20)])
    assert len(outer.transforms) == 3 and sorted(outer.state_dict()) == ["0", "1", "2"]
    assert "RandomCrop(size=(20, 20), padding=0)" in repr(outer)


def test_the_pytorch_twin_draws_and_crops_the_same():
    torch = pytest.importorskip("torch")
    from fastlayers.torch_bridge import augment_to_torch
    x = _batch(33)
    fl.manual_seed(6)
    ours = _crop_flip()
    fl.manual_seed(6)
    theirs = augment_to_torch(_crop_flip())
    for _ in range(3):
        np.testing.assert_array_equal(ours(x), theirs(torch.from_numpy(x)).numpy())


def test_engine_trains_on_the_augmented_batch_and_predicts_flip_averaged():
    from fastlayers.models import build
    x, y = _batch(16), np.arange(16) % 10
    fl.manual_seed(0)
    a, aug_a = build("cnn"), _crop_flip()
    fl.manual_seed(0)
    b, aug_b = build("cnn"), _crop_flip()
    engine = Engine(a, fl.CrossEntropyLoss(), fl.SGD(a.parameters(), lr=0.1), augment=aug_a,
                    tta_flip=True)
    by_hand = Engine(b, fl.CrossEntropyLoss(), fl.SGD(b.parameters(), lr=0.1))
    for _ in range(2):
        assert engine.train_step(x, y) == by_hand.train_step(aug_b(x), y)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    engine.train(False)
    b.train(False)
    with fl.no_grad():
        expected = (b(x) + b(np.ascontiguousarray(x[..., ::-1]))).argmax(axis=1)
    np.testing.assert_array_equal(engine.predict(x), expected)


# ------------------------------------------------------------------------------- the command line

def _run(argv):
    out = io.StringIO()
    report = mnist.run(mnist.parse_args(argv + ["--no-progress"]), out=out)
    return report, out.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 96/40-image IDX dataset of random images (for runs, not for accuracy)."""
    path = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 40)):
        write_idx(path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return ["--dataset", "mnist", "--data-dir", str(path), "--no-download"]


def test_list_recipes_prints_every_recipe_with_its_target(capsys):
    with pytest.raises(SystemExit) as e:
        mnist.parse_args(["--list-recipes"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in ("fashion-93", "fashion-90", "mnist10k-98", "mlp-88"):
        assert name in text
    for target in ("93.4%", "90.0%", "98.0%", "88.3%"):
        assert f"target {target}" in text


def test_a_recipe_sets_every_option_and_flags_override_it():
    r = recipes.get("fashion-93")
    args = mnist.parse_args(["--recipe", "fashion-93"])
    for name, value in r.options().items():
        assert getattr(args, name) == value, name
    args = mnist.parse_args(["--recipe", "fashion-93", "--epochs", "2", "--no-hflip",
                             "--lr", "0.01", "--dataset", "mnist-10k", "--label-smoothing", "0"])
    assert (args.epochs, args.hflip, args.lr, args.dataset, args.label_smoothing) == \
        (2, False, 0.01, "mnist-10k", 0.0)
    assert args.crop_padding == r.crop_padding and args.target_accuracy == r.target_accuracy
    plain = mnist.parse_args([])
    assert (plain.dataset, plain.model, plain.lr_schedule, plain.crop_padding, plain.hflip) == \
        ("mnist-10k", "mlp", "none", 0, False)
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipes.get("fashion-99")


@pytest.mark.parametrize("argv, message", [
    (["--crop-padding", "2"], "--crop-padding needs an image model"),
    (["--recipe", "fashion-93", "--model", "mlp"],
     "--hflip (set by --recipe fashion-93) needs an image model"),
    (["--recipe", "mlp-88", "--tta-flip"], "--tta-flip needs an image model"),
    (["--recipe", "nope"], "invalid choice"),
    (["--label-smoothing", "1.5"], "must be a fraction in [0, 1]"),
    (["--crop-padding", "-1"], "must be an integer >= 0"),
])
def test_bad_recipe_options_exit_with_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        mnist.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_a_recipe_run_reports_itself(tiny):
    report, text = _run(["--recipe", "fashion-93", *tiny, "--model", "cnn", "--epochs", "1",
                         "--batch-size", "32"])
    assert report["config"]["recipe"] == "fashion-93" and report["config"]["hflip"] is True
    assert "recipe          fashion-93" in text
    assert "random horizontal flip (in training time)" in text and "flip-averaged" in text
    assert "label smoothing 0.1" in text


def test_compare_torch_runs_the_identical_augmented_recipe(tiny):
    pytest.importorskip("torch")
    report, text = _run(["--recipe", "fashion-93", *tiny, "--model", "cnn", "--epochs", "2",
                         "--batch-size", "32", "--optimizer", "sgd", "--lr", "0.05",
                         "--compare-torch"])
    ours, theirs = report["results"]["fastlayers"], report["results"]["pytorch"]
    for a, b in zip(ours["epochs"], theirs["epochs"]):   # same crops, flips, smoothing, schedule
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert "time to target" in text


def test_an_augmented_run_resumes_exactly(tiny, tmp_path):
    common = [*tiny, "--model", "cnn", "--batch-size", "32", "--crop-padding", "2", "--hflip",
              "--optimizer", "sgd", "--lr", "0.05"]
    a, b, ckpt = tmp_path / "a.st", tmp_path / "b.st", tmp_path / "c.st"
    _run(common + ["--epochs", "2", "--save", str(a)])
    _run(common + ["--epochs", "1", "--checkpoint", str(ckpt)])
    assert fl.load(ckpt)["augment"]["0"]["calls"] == 3          # 96 images / 32
    with pytest.raises(ValueError, match="hflip"):
        _run([*tiny, "--model", "cnn", "--batch-size", "32", "--crop-padding", "2", "--optimizer",
              "sgd", "--lr", "0.05", "--epochs", "2", "--resume", str(ckpt)])
    _, text = _run(common + ["--epochs", "2", "--resume", str(ckpt), "--save", str(b)])
    assert "resumed from" in text
    sa, sb = fl.load(a), fl.load(b)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
