"""Evaluation with and without fastlayers.no_grad: throughput (images per second) and peak memory
of a forward over an evaluation batch, for each speed-run model, side by side.

    python asv_bench/inference.py [--batch 1000] [--rounds 15]

Peak memory is NumPy's allocations during one forward (tracemalloc), caches included; throughput
is the median of interleaved rounds.
"""
import argparse
import pathlib
import sys
import tracemalloc

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import kernels  # noqa: E402,F401  (first: it settles the thread pools)
from benchmarks.common import env_summary, interleaved_medians  # noqa: E402
from optim_step import cpu_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1000, help="evaluation batch (default 1000)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    args = p.parse_args(argv)
    import numpy as np

    import fastlayers as fl
    from fastlayers.models import FLAT_INPUT, build
    print(f"CPU: {cpu_model()}; {env_summary()}; batch {args.batch}")
    print(f"{'model':7} {'images/s':>10} {'no_grad images/s':>17} {'peak MB':>8} "
          f"{'no_grad peak MB':>16}")
    for name in ("mlp", "mlp-bn", "cnn"):
        fl.manual_seed(0)
        model = build(name).eval()
        shape = (args.batch, 784) if FLAT_INPUT[name] else (args.batch, 1, 28, 28)
        x = np.random.default_rng(0).random(shape, np.float32)

        def plain():
            return model(x)

        def inference():
            with fl.no_grad():
                return model(x)
        peaks = {}
        for label, fn in (("plain", plain), ("no_grad", inference)):
            fn()
            for m in model.modules():
                object.__setattr__(m, "_cache", None)
            tracemalloc.start()
            fn()
            peaks[label] = tracemalloc.get_traced_memory()[1] / 2 ** 20
            tracemalloc.stop()
        med = interleaved_medians({"plain": plain, "no_grad": inference}, rounds=args.rounds)
        print(f"{name:7} {args.batch / med['plain']:10,.0f} {args.batch / med['no_grad']:17,.0f} "
              f"{peaks['plain']:8.1f} {peaks['no_grad']:16.1f}")


if __name__ == "__main__":
    main()
