"""The speed-run command line: end-to-end runs on the embedded data, JSON output, comparisons,
and clear errors for bad arguments and missing data."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastlayers import mnist
from fastlayers.data import write_idx


def _run(argv):
    out = io.StringIO()
    report = mnist.run(mnist.parse_args(argv + ["--no-progress"]), out=out)
    return report, out.getvalue()


def test_cli_process_trains_and_writes_json(tmp_path):
    path = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "fastlayers.mnist", "--epochs", "1", "--no-progress",
                           "--json", str(path)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert "compile/load kernels" in proc.stdout and "epoch  1" in proc.stdout
    report = json.loads(path.read_text())
    assert report["config"]["dataset"] == "mnist-10k" and report["config"]["model"] == "mlp"
    run = report["results"]["fastlayers"]
    assert len(run["epochs"]) == 1
    epoch = run["epochs"][0]
    assert epoch["seconds"] > 0 and epoch["samples_per_s"] > 0
    assert 0.8 < epoch["test_accuracy"] <= 1.0        # one epoch of the MLP on real digits
    assert report["compile_s"] >= 0 and report["environment"]["numba"]
    assert not list(tmp_path.glob("*.tmp*"))           # the JSON was written atomically


def test_target_accuracy_stops_early_and_reports_time():
    report, text = _run(["--epochs", "5", "--target-accuracy", "0.5"])
    run = report["results"]["fastlayers"]
    assert len(run["epochs"]) == 1                     # 50% is reached after the first epoch
    assert run["time_to_target_s"] == pytest.approx(run["epochs"][0]["seconds"])
    assert "reached 50.00%" in text


def test_compare_numpy_gives_the_same_training():
    report, text = _run(["--epochs", "1", "--compare-numpy"])
    a, b = report["results"]["fastlayers"], report["results"]["fastlayers-numpy"]
    assert a["epochs"][0]["train_loss"] == pytest.approx(b["epochs"][0]["train_loss"], rel=1e-4)
    assert "| fastlayers-numpy |" in text


def test_compare_torch_same_init_and_batches():
    pytest.importorskip("torch")
    report, text = _run(["--epochs", "1", "--compare-torch"])
    a, b = report["results"]["fastlayers"], report["results"]["pytorch"]
    # Same architecture, initial weights, hyperparameters and batch order: same training curve.
    assert a["epochs"][0]["train_loss"] == pytest.approx(b["epochs"][0]["train_loss"], rel=1e-3)
    assert b["fastlayers_time_ratio"] > 0 and "| pytorch |" in text


@pytest.mark.parametrize("model", ["mlp-bn", "cnn"])
def test_other_models_run_on_a_tiny_idx_dataset(tmp_path, model):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 40)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    report, _ = _run(["--dataset", "mnist", "--data-dir", str(tmp_path), "--no-download",
                      "--model", model, "--epochs", "1", "--batch-size", "32"])
    assert np.isfinite(report["results"]["fastlayers"]["epochs"][0]["train_loss"])


def test_missing_files_give_a_clear_error_and_exit_status_2(tmp_path, capsys):
    status = mnist.main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--no-download",
                         "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(tmp_path) in err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar"], "invalid choice"),
    (["--model", "resnet"], "invalid choice"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["--lr", "-1"], "argument --lr: must be a finite number > 0"),
    (["--target-accuracy", "1.5"], "argument --target-accuracy: must be a fraction in (0, 1]"),
    (["--threads", "0"], "argument --threads: must be an integer >= 1"),
    (["--blas-threads", "0"], "argument --blas-threads: must be an integer >= 1"),
    (["--deterministic", "--blas-threads", "2"], "--deterministic keeps BLAS on one thread"),
])
def test_bad_arguments_exit_with_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        mnist.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plot_writes_a_png_or_says_matplotlib_is_missing(tmp_path, capsys):
    path = tmp_path / "curves.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit):
            mnist.parse_args(["--plot", str(path)])
        assert "needs matplotlib" in capsys.readouterr().err
    else:
        _run(["--epochs", "1", "--plot", str(path)])
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_option_has_help():
    missing = [a.option_strings for a in mnist.make_parser()._actions if not a.help]
    assert not missing


@pytest.mark.parametrize("n, batch_size, drop_last", [
    (10, 3, False), (10, 3, True), (9, 3, False), (2, 5, False), (2, 5, True), (1, 1, False)])
def test_warm_up_batch_sizes_are_the_loaders(n, batch_size, drop_last):
    from fastlayers.data import DataLoader
    loader = DataLoader(np.zeros((n, 4), np.float32), np.zeros(n, np.int64),
                        batch_size=batch_size, drop_last=drop_last)
    assert mnist._batch_sizes(loader) == {len(y) for _, y in loader}


def test_deterministic_gives_the_same_run_on_one_and_two_threads():
    import fastlayers as fl
    try:
        runs = [_run(["--epochs", "1", "--deterministic", "--threads", t])[0] for t in ("1", "2")]
    finally:
        fl.use_deterministic_algorithms(False)
        fl.set_num_threads()
    assert [r["config"]["threads"] for r in runs] == [1, 2]
    a, b = (r["results"]["fastlayers"]["epochs"][0] for r in runs)
    assert a["train_loss"] == b["train_loss"] and a["test_accuracy"] == b["test_accuracy"]


def test_blas_threads_reach_blas_and_the_json():
    import fastlayers as fl
    try:
        report, _ = _run(["--epochs", "1", "--blas-threads", "2"])
        assert fl.get_blas_threads() == 2
    finally:
        fl.set_num_threads()
    assert fl.get_blas_threads() == 1
    assert report["environment"]["blas_threads"] == 2


def test_interrupt_ends_in_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(args, out=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(mnist, "run", interrupted)
    assert mnist.main(["--no-progress"]) == 130
    assert capsys.readouterr().err.strip() == "fastlayers-mnist: interrupted"


def test_help_states_defaults_without_none_noise():
    text = mnist.make_parser().format_help()
    assert "(default: None)" not in text and "default: None" not in text
    for stated in ("default: mnist-10k", "default: mlp", "default: 0", "(default)",
                   "default: 20 mlp, 5 mlp-bn, 3 cnn", "--progress, --no-progress"):
        assert stated in " ".join(text.split()), stated


@pytest.mark.parametrize("argv, tty, progress", [
    ([], False, False), ([], True, True), (["--progress"], False, True),
    (["--no-progress"], True, False)])
def test_progress_bar_only_on_a_terminal_unless_forced(monkeypatch, argv, tty, progress):
    class Stream(io.StringIO):
        def isatty(self):
            return tty
    monkeypatch.setattr(sys, "stderr", Stream())
    assert mnist.parse_args(argv).progress is progress


def test_progress_bar_shows_one_throughput_figure(monkeypatch):
    from fastlayers.data import DataLoader
    from fastlayers.train import run_epoch

    class Engine:
        def train(self, mode):
            pass

        def train_step(self, x, y):
            return 0.5
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    loader = DataLoader(np.zeros((64, 4), np.float32), np.zeros(64, np.int64), batch_size=16)
    bar = mnist._progress_bar("fastlayers epoch 1/1", loader.num_samples)
    bar.mininterval = 0
    run_epoch(Engine(), loader, bar)
    bar.close()
    shown = err.getvalue()
    assert "samples/s of training time" in shown and "loss 0.5000" in shown
    assert "img/s" not in shown and "it/s" not in shown   # tqdm's own rate is left out


def test_summary_and_json_schema(tmp_path):
    import datetime
    path = tmp_path / "r.json"
    report, text = _run(["--epochs", "2", "--target-accuracy", "0.999", "--json", str(path)])
    summary = text[text.index("summary (fastlayers)"):]
    for field in ("model", "mlp", "dataset", "mnist-10k", "optimizer", "sgd", "epochs", "2 of 2",
                  "training time", "median epoch", "samples/s of training time",
                  "final", "best", "99.90% not reached", "compile/load"):
        assert field in summary, field
    saved = json.loads(path.read_text())
    assert saved["schema_version"] == 2 and isinstance(saved["schema_version"], int)
    stamp = datetime.datetime.fromisoformat(saved["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)
    assert set(saved["git"]) == {"commit", "dirty"}
    run = saved["results"]["fastlayers"]
    assert run["best_test_accuracy"] == max(e["test_accuracy"] for e in run["epochs"])
    assert run["samples_per_s"] > 0


def test_git_state_in_this_checkout_and_without_git(monkeypatch, tmp_path):
    import shutil
    state = mnist._git_state()
    here = os.path.dirname(os.path.dirname(os.path.abspath(mnist.__file__)))
    if shutil.which("git") and os.path.exists(os.path.join(here, ".git")):   # a file in a worktree
        assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)
    monkeypatch.setenv("PATH", str(tmp_path))    # no git executable
    assert mnist._git_state() == {"commit": None, "dirty": None}


def test_plot_is_accuracy_against_training_time(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    seen = {}

    def record(fig, path, **kw):
        ax = fig.axes[0]
        seen.update(n_axes=len(fig.axes), title=ax.get_title(), x=ax.get_xlabel(),
                    y=ax.get_ylabel(), legend=[t.get_text() for t in ax.get_legend().get_texts()],
                    xdata=[list(line.get_xdata()) for line in ax.get_lines()])
    monkeypatch.setattr(Figure, "savefig", record)
    report, _ = _run(["--epochs", "2", "--compare-numpy", "--plot", str(tmp_path / "p.png")])
    assert seen["n_axes"] == 1
    assert all(w in seen["title"] for w in ("mlp", "sgd", "mnist-10k"))
    assert "training time" in seen["x"] and "accuracy" in seen["y"]
    assert seen["legend"] == ["fastlayers", "fastlayers-numpy"]
    secs = [e["seconds"] for e in report["results"]["fastlayers"]["epochs"]]
    assert seen["xdata"][0] == pytest.approx(np.cumsum(secs))


def _cli(*argv):
    proc = subprocess.run([sys.executable, "-m", "fastlayers.mnist", "--no-progress", *argv],
                          capture_output=True, text=True, timeout=1200)
    return proc


def test_checkpoint_and_resume_in_new_processes_is_exact(tmp_path):
    """4 epochs straight == 2 epochs with --checkpoint, then --resume to 4 in a new process:
    bitwise the same final model (mlp-bn: shuffling, dropout, batch norm and Adam state)."""
    import fastlayers as fl
    common = ["--model", "mlp-bn", "--batch-size", "256"]
    straight, ckpt, resumed = (tmp_path / n for n in ("straight.st", "ckpt.st", "resumed.st"))
    assert _cli(*common, "--epochs", "4", "--save", str(straight)).returncode == 0
    first = _cli(*common, "--epochs", "2", "--checkpoint", str(ckpt))
    assert first.returncode == 0, first.stderr
    second = _cli(*common, "--epochs", "4", "--resume", str(ckpt), "--save", str(resumed),
                  "--checkpoint", str(ckpt))
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout and "epoch  3" in second.stdout
    assert "epoch  1" not in second.stdout
    a, b = fl.load(straight), fl.load(resumed)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert fl.load(ckpt)["epoch"] == 4


def test_resume_refuses_other_settings_and_damaged_files(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.st"
    assert mnist.main(["--epochs", "1", "--no-progress", "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    assert mnist.main(["--epochs", "2", "--no-progress", "--resume", str(ckpt), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings differ" in err[0] and "lr" in err[0]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    assert mnist.main(["--epochs", "2", "--no-progress", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ckpt.st" in err[0]
    with pytest.raises(SystemExit) as e:
        mnist.parse_args(["--resume", str(tmp_path / "missing.st")])
    assert e.value.code == 2


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "step"])
def test_schedules_weight_decay_and_clipping_match_pytorch(schedule):
    """The same recipe in both frameworks: epoch losses agree (mlp, 2 epochs)."""
    pytest.importorskip("torch")
    report, text = _run(["--epochs", "2", "--optimizer", "adamw", "--weight-decay", "0.05",
                         "--lr", "0.002", "--lr-schedule", schedule, "--clip-grad", "0.5",
                         "--compare-torch"])
    ours, theirs = report["results"]["fastlayers"], report["results"]["pytorch"]
    for a, b in zip(ours["epochs"], theirs["epochs"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    assert report["config"]["lr_schedule"] == schedule and report["config"]["clip_grad"] == 0.5
    assert f"({schedule} schedule), gradients clipped to 0.5" in text


def test_an_interrupted_run_with_a_schedule_resumes_exactly(tmp_path, monkeypatch):
    import fastlayers as fl
    from fastlayers import train
    common = ["--epochs", "3", "--lr-schedule", "onecycle", "--batch-size", "256", "--model",
              "mlp-bn"]
    ckpt, a, b = tmp_path / "c.st", tmp_path / "a.st", tmp_path / "b.st"
    _run(common + ["--save", str(a)])
    real, calls = train.run_epoch, []

    def interrupted(*args, **kw):          # Ctrl-C during the second epoch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(train, "run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(common + ["--checkpoint", str(ckpt)])
    monkeypatch.setattr(train, "run_epoch", real)
    assert fl.load(ckpt)["epoch"] == 1
    with pytest.raises(ValueError, match="epochs"):    # the schedule's length is the run's
        _run(["--epochs", "4"] + common[2:] + ["--resume", str(ckpt)])
    _, text = _run(common + ["--resume", str(ckpt), "--save", str(b)])
    assert "resumed from" in text
    sa, sb = fl.load(a), fl.load(b)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
