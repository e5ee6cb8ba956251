"""fastlayers.distributed on real MPI jobs: 2 ranks under mpiexec (the checks of
tests/fastlayers/mpi_jobs/ddp_checks.py, the speed run's --distributed against one process, resumes
on 1 and 2 ranks, a killed, a raising and a stuck rank), and a one-process "world" without mpiexec.

Skipped where mpi4py or mpiexec is missing. Every job runs under a hang guard (``timeout=``): a job
that hangs fails instead of blocking the suite. Each rank gets one thread (two ranks share the
machine's CPUs).
"""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastlayers as fl

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason="needs mpi4py and an MPI library: pip install 'fastlayers[mpi]'"),
    pytest.mark.skipif(shutil.which("mpiexec") is None,
                       reason="needs mpiexec (pip install 'fastlayers[mpi]' brings Open MPI's)"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOBS = pathlib.Path(__file__).with_name("mpi_jobs")
HANG_GUARD = 900   # seconds: a cold compile of the kernels on a loaded machine stays well below


def _env():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("FASTLAYERS_DATA", None)
    return env


def _mpiexec(argv, n=2, timeout=HANG_GUARD, cwd=None):
    """``mpiexec -n n --oversubscribe python <argv>`` (argv starts with "-m", a script, ...)."""
    cmd = [shutil.which("mpiexec"), "-n", str(n), "--oversubscribe", sys.executable, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                          cwd=cwd)


def _python(argv, timeout=HANG_GUARD, cwd=None):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=cwd)


def _weights_close(a, b, atol):
    a, b = fl.load(str(a)), fl.load(str(b))
    assert sorted(a) == sorted(b)
    worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)
    assert worst <= atol, worst
    return worst


def test_library_checks_on_two_ranks():
    proc = _mpiexec(["-m", "mpi4py", str(JOBS / "ddp_checks.py")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in ("one-process mlp-syncbn-dropout-adam", "one-process cnn-syncbn-sgd",
                  "bitwise-fixed-order", "sync-batchnorm-layer", "sampler-and-init-sync",
                  "no-sync", "all ranks=2"):
        assert f"ok {check}" in proc.stdout, proc.stdout


# The speed run's model with batch norm and dropout, SGD (Adam magnifies the rounding differences
# of gradients near zero, see docs/distributed.md), two short epochs.
RUN = ["--model", "mlp-bn", "--optimizer", "sgd", "--lr", "0.05", "--no-progress"]


def test_speed_run_on_two_ranks_trains_one_process_weights_and_resumes(tmp_path):
    # 2 ranks, global batch 128, 2 epochs with a checkpoint; then the run resumed to 3 epochs on 1
    # process and on 2 ranks; against one process trained 2 and 3 epochs straight.
    two = _mpiexec(["-m", "mpi4py", "-m", "fastlayers.mnist", "--distributed", *RUN, "--epochs",
                    "2", "--json", "r.json", "--save", "w2.safetensors", "--checkpoint",
                    "ck.safetensors"], cwd=tmp_path)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("epoch  1:") == 1          # rank 0 alone prints
    assert "data parallel   2 ranks x 64 samples (SyncBatchNorm" in two.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["environment"]["world_size"] == 2
    d = report["distributed"]
    assert d["world_size"] == 2 and d["batch_per_rank"] == 64 and d["sync_batchnorm"] is True
    run = report["results"]["fastlayers"]
    assert 0 <= run["communication_share"] < 1 and run["communication_s"] > 0
    assert d["communication_share"] == run["communication_share"]
    # the replicas' digests: equal, and those of the weights rank 0 saved
    from fastlayers.distributed import replica_hash
    from fastlayers.models import build
    assert len(d["replica_sha256"]) == 2 and len(set(d["replica_sha256"])) == 1
    saved = build("mlp-bn")
    saved.load_state_dict(fl.load(str(tmp_path / "w2.safetensors")))
    assert replica_hash(saved) == d["replica_sha256"][0]
    assert all(0 < e["communication_s"] < e["seconds"] for e in run["epochs"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors", "r.json",
                                                          "w2.safetensors"]
    for epochs in ("2", "3"):
        one = _python(["-m", "fastlayers.mnist", *RUN, "--threads", "1", "--epochs", epochs,
                       "--save", f"one{epochs}.safetensors"], cwd=tmp_path)
        assert one.returncode == 0, one.stderr
    # The same global batches, masks and statistics: the weights differ by float rounding only
    # (measured about 1e-7).
    _weights_close(tmp_path / "w2.safetensors", tmp_path / "one2.safetensors", 1e-5)
    resumed_one = _python(["-m", "fastlayers.mnist", *RUN, "--threads", "1", "--epochs", "3",
                           "--resume", "ck.safetensors", "--save", "r1.safetensors"],
                          cwd=tmp_path)
    assert resumed_one.returncode == 0, resumed_one.stderr
    assert "after epoch 2 (written by 2 ranks)" in resumed_one.stdout
    resumed_two = _mpiexec(["-m", "mpi4py", "-m", "fastlayers.mnist", "--distributed", *RUN,
                            "--epochs", "3", "--resume", "ck.safetensors", "--save",
                            "r2.safetensors"], cwd=tmp_path)
    assert resumed_two.returncode == 0, resumed_two.stdout + resumed_two.stderr
    assert "resumed from ck.safetensors after epoch 2" in resumed_two.stdout
    for resumed in ("r1", "r2"):
        _weights_close(tmp_path / f"{resumed}.safetensors", tmp_path / "one3.safetensors", 1e-5)


@pytest.mark.parametrize("mode, message", [
    ("kill", "signal 9"),
    ("raise", "rank 1 of 2 raised RuntimeError"),
    ("stuck", "rank 0 of 2 waited more than 3 s in"),
])
def test_a_failing_rank_ends_the_whole_job(mode, message):
    # Without `python -m mpi4py`: fastlayers.distributed's own handling ends the job (the
    # exception hook, the collective timeout); a killed rank is ended by mpiexec.
    proc = _mpiexec([str(JOBS / "failures.py"), mode, "3"], timeout=300)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "unreachable" not in proc.stdout


def test_speed_run_error_on_the_ranks_ends_the_job_with_one_line(tmp_path):
    bad = tmp_path / "not-a-checkpoint.safetensors"
    fl.save({"w": np.zeros(2, np.float32)}, str(bad))
    proc = _mpiexec(["-m", "mpi4py", "-m", "fastlayers.mnist", "--distributed", "--no-progress",
                     "--resume", str(bad)], timeout=300)
    assert proc.returncode == 2
    assert "fastlayers-mnist: error (rank" in proc.stderr
    assert "not a checkpoint written by --checkpoint" in proc.stderr


def test_speed_run_batch_must_split_evenly():
    proc = _mpiexec(["-m", "mpi4py", "-m", "fastlayers.mnist", "--distributed", "--batch-size",
                     "33"], timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("--batch-size 33 must be a multiple of the 2 ranks") == 1


def test_one_process_world_without_mpiexec(tmp_path):
    # `--distributed` in a plain process: a world of one rank, the single process's run.
    proc = _python(["-m", "fastlayers.mnist", "--distributed", "--epochs", "1", "--no-progress",
                    "--threads", "1", "--json", "r.json", "--save", "a.safetensors"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plain = _python(["-m", "fastlayers.mnist", "--epochs", "1", "--no-progress", "--threads", "1",
                     "--save", "b.safetensors"], cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["distributed"]["world_size"] == 1
    assert report["distributed"]["sync_batchnorm"] is False
    assert _weights_close(tmp_path / "a.safetensors", tmp_path / "b.safetensors", 0.0) == 0.0
