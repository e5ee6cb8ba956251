"""The optimizer step both ways, side by side: fastlayers' optimizers (one compiled call per
parameter, over the arrays each parameter holds now) against the same kernel run once over one
packed buffer of all the parameters, at the speed-run models' parameter shapes; and each model's
whole training step, for the share.

    python asv_bench/optim_step.py [--rounds 15]

Prints medians of interleaved rounds (benchmarks.common.interleaved_medians) and the CPU model.
"""
import argparse
import pathlib
import platform
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import kernels  # noqa: E402,F401  (first: its thread defaults must precede NumPy's OpenBLAS loading)
from benchmarks import bench_optim  # noqa: E402
from benchmarks.common import env_summary, interleaved_medians  # noqa: E402

# model: (bench_optim's parameter set, optimizer, its name in fastlayers.models, lr, batch)
MODELS = {"mlp": ("mlp", "sgd", "mlp", 0.2, 64), "mlp-bn": ("mlp_bn", "adam", "mlp-bn", 1e-3, 128),
          "cnn": ("cnn", "adam", "cnn", 1e-3, 128)}


def _train_step(name, opt, lr, batch):
    import numpy as np

    import fastlayers as fl
    from fastlayers.models import FLAT_INPUT, build
    from fastlayers.train import OPTIMIZERS, Engine
    fl.manual_seed(0)
    model = build(name)
    engine = Engine(model, fl.CrossEntropyLoss(), OPTIMIZERS[opt](model.parameters(), lr=lr))
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784) if FLAT_INPUT[name] else (batch, 1, 28, 28), np.float32)
    y = rng.integers(0, 10, batch)
    return lambda: engine.train_step(x, y)


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    args = p.parse_args(argv)
    print(f"CPU: {cpu_model()}; {env_summary()}")
    print(f"{'model':7} {'optimizer':9} {'per-parameter us':>16} {'packed us':>10} "
          f"{'difference us':>13} {'training step us':>16} {'difference / step':>17}")
    for model, (params, opt, name, lr, batch) in MODELS.items():
        fns = {impl: bench_optim.make(impl, params, opt).fns["step"] for impl in ("numba", "packed")}
        fns["train step"] = _train_step(name, opt, lr, batch)
        med = interleaved_medians(fns, rounds=args.rounds)
        diff = med["numba"] - med["packed"]
        print(f"{model:7} {opt:9} {med['numba'] * 1e6:16.1f} {med['packed'] * 1e6:10.1f} "
              f"{diff * 1e6:13.1f} {med['train step'] * 1e6:16.1f} "
              f"{diff / med['train step']:17.1%}")


if __name__ == "__main__":
    main()
