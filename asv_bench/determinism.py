"""What BLAS's default single thread costs (the setting under which a seed gives the same bits on
any thread count): the training step time of each speed-run model with one BLAS thread and with
``--threads`` BLAS threads, at the same kernel thread count.

    python asv_bench/determinism.py [--threads 2] [--rounds 15] [--steps 40] [--models ...]

One model, one optimizer and one list of batches per model; rounds of ``--steps`` steps alternate
between the two settings (on, off, then off, on, ...) so both see the same machine load, and the
figures are medians over rounds of the mean step time in a round. The model keeps training
throughout, which changes nothing in a step's cost. Prints the CPU model: the ratio depends on the
CPU's BLAS kernels. Run it on an otherwise idle machine: a busy second CPU slows two-thread BLAS
most.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

# this checkout's fastlayers, not whichever one is installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastlayers as fl  # noqa: E402  (before NumPy: BLAS's thread defaults)
from fastlayers.models import FLAT_INPUT, build  # noqa: E402
from fastlayers.train import Engine  # noqa: E402

SPEED_RUN = {"mlp": ("SGD", 0.2, 32), "mlp-bn": ("Adam", 1e-3, 128), "cnn": ("Adam", 1e-3, 128)}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def step_times(name, threads, rounds, steps):
    opt, lr, batch = SPEED_RUN[name]
    fl.manual_seed(0)
    ds = fl.data.load_dataset("mnist-10k")
    model = build(name)
    engine = Engine(model, fl.CrossEntropyLoss(), getattr(fl, opt)(model.parameters(), lr=lr))
    loader = fl.data.DataLoader(ds.x_train, ds.y_train, batch, shuffle=True, drop_last=True,
                                flatten=FLAT_INPUT[name])
    batches = [b for _, b in zip(range(steps), loader)]
    times = {True: [], False: []}
    for mode in (True, False):   # warm-up (compiles or loads the kernels)
        fl.set_num_threads(threads, blas_threads=1 if mode else threads)
        for x, y in batches[:5]:
            engine.train_step(x, y)
    for r in range(rounds):
        for mode in ((True, False) if r % 2 == 0 else (False, True)):
            fl.set_num_threads(threads, blas_threads=1 if mode else threads)
            t0 = time.perf_counter()
            for x, y in batches:
                engine.train_step(x, y)
            times[mode].append((time.perf_counter() - t0) / len(batches))
    fl.set_num_threads(threads)
    return statistics.median(times[True]), statistics.median(times[False])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--models", nargs="+", choices=sorted(SPEED_RUN), default=list(SPEED_RUN))
    args = p.parse_args(argv)
    print(f"CPU: {cpu_model()}; {args.threads} kernel threads; medians of {args.rounds} "
          f"interleaved rounds of {args.steps} steps")
    print(f"{'model':8s} {'1 BLAS thread ms':>17s} {'N BLAS ms':>11s} {'ratio':>6s}")
    for name in args.models:
        on, off = step_times(name, args.threads, args.rounds, args.steps)
        print(f"{name:8s} {on * 1e3:17.3f} {off * 1e3:11.3f} {on / off:6.3f}", flush=True)


if __name__ == "__main__":
    main()
