"""The speed run on 1 and on 2 ranks, alternating, one thread a rank: step time and communication.

    python asv_bench/ranks_table.py [--repeats 3] [--epochs 2] [--models mlp mlp-bn cnn]

For each model, runs ``python -m fastlayers.mnist --threads 1`` (one process) and
``mpiexec -n 2 python -m mpi4py -m fastlayers.mnist --distributed`` (2 ranks x 1 thread) in turn,
``--repeats`` times each, on the embedded mnist-10k digits with the speed-run defaults, and prints
medians over the runs of: the median epoch's seconds per step (a global batch), samples per
second, and from the run's JSON the shares of rank 0's training time spent communicating (each
collective's own time, that of the last rank to arrive) and waiting for the other rank inside the
collectives (fastlayers.distributed.ProcessGroup.split_time).
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env():
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def idle_fraction(seconds=2.0):
    """The fraction of the machine's CPU time that was idle over ``seconds`` (/proc/stat)."""
    def sample():
        fields = [float(v) for v in pathlib.Path("/proc/stat").read_text().split()[1:9]]
        return fields[3] + fields[4], sum(fields)
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(total1 - total0, 1e-9)


def wait_idle(threshold, max_wait):
    """Wait (up to ``max_wait`` seconds) until the machine is at least ``threshold`` idle: the
    2-rank job needs both CPUs; another process on one of them makes the ranks wait for each
    other. Returns the idle fraction seen last."""
    deadline = time.monotonic() + max_wait
    while True:
        idle = idle_fraction()
        if idle >= threshold or time.monotonic() > deadline:
            return idle
        time.sleep(5)


def run(model, ranks, epochs, out):
    args = ["-m", "fastlayers.mnist", "--model", model, "--epochs", str(epochs), "--no-progress",
            "--json", str(out)]
    if ranks == 1:
        cmd = [sys.executable, *args, "--threads", "1"]
    else:
        cmd = [shutil.which("mpiexec"), "-n", str(ranks), sys.executable, "-m", "mpi4py", *args,
               "--distributed"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=3600, env=_env())
    report = json.loads(out.read_text())
    r = report["results"]["fastlayers"]
    batch = report["config"]["batch_size"]
    steps = -(-8334 // batch)
    return {"step_s": r["median_epoch_s"] / steps, "samples_per_s": r["samples_per_s"],
            "comm": r.get("communication_share", 0.0), "wait": r.get("wait_share", 0.0)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--models", nargs="+", default=["mlp", "mlp-bn", "cnn"])
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="FRACTION",
                   help="before each run wait (up to --max-wait s) until the machine is this idle")
    p.add_argument("--max-wait", type=float, default=600.0)
    args = p.parse_args()
    idles = []
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for i in range(args.repeats):
                for ranks in (1, 2):
                    if args.wait_idle:
                        idles.append(wait_idle(args.wait_idle, args.max_wait))
                    got = run(model, ranks, args.epochs, pathlib.Path(tmp) / "r.json")
                    results.setdefault((model, ranks), []).append(got)
    print("| model | ranks x threads | step (global batch) | samples/s | communication | "
          "waiting for the other rank | speedup |\n|---|---|---:|---:|---:|---:|---:|")
    for model in args.models:
        one = statistics.median(r["step_s"] for r in results[(model, 1)])
        for ranks in (1, 2):
            rs = results[(model, ranks)]
            step = statistics.median(r["step_s"] for r in rs)
            comm = statistics.median(r["comm"] for r in rs)
            wait = statistics.median(r["wait"] for r in rs)
            sps = statistics.median(r["samples_per_s"] for r in rs)
            print(f"| {model} | {ranks} x 1 | {step * 1e3:.2f} ms | {sps:,.0f} | {comm:.1%} | "
                  f"{wait:.1%} | {one / step:.2f}x |")
    shares = "; ".join(m + " " + ", ".join(f"{r['comm']:.1%}" for r in results[(m, 2)])
                       for m in args.models)
    print(f"\n(medians of {args.repeats} alternating runs of {args.epochs} epochs; the 2-rank "
          f"runs' communication shares: {shares})")
    if idles:
        print(f"(machine idle before the runs: {min(idles):.0%} to {max(idles):.0%})")


if __name__ == "__main__":
    main()
