"""The data-parallel cost model of docs/distributed.md: measured compute, modelled communication.

    python asv_bench/scaling.py --allreduce ar.json [--rounds 9] [--plot scaling.png]

1. Compute: one training step of each speed-run model in one process, one thread, at the per-rank
   batch sizes that N ranks give its speed-run batch (mlp 32, mlp-bn and cnn 128), medians of
   interleaved rounds. Batch norms run the SyncBatchNorm passes (the split kernels, with a
   stand-in group of identical ranks, so no time goes to communication).
2. Communication per step, with the ring model for an allreduce of B bytes on N ranks,
   2 (N - 1) / N * B / bandwidth + 2 (N - 1) * latency, and (N - 1) * (b / bandwidth + latency)
   for an allgather of b bytes a rank: the gradient (one allreduce), and per batch norm layer one
   allgather of its 2C + 1 statistics (forward) and one allreduce of its 2C sums (backward).
   Latency and bandwidth: --allreduce's JSON (asv_bench/allreduce.py, measured here over shared
   memory) and two networks between machines (assumed figures, not measured here).
3. Predicted step time T(N) = compute(B / N) + communication(N) and the efficiency
   T(1) / (N T(N)) for the speed run's global batch (strong scaling), N = 1 ... 64; and with the
   speed-run batch on every rank (weak scaling, global batch N B): compute(B) / T(N).
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import kernels  # noqa: E402,F401  (first: its thread defaults precede NumPy's OpenBLAS loading)
import numpy as np  # noqa: E402

from benchmarks.bench_syncbn import TwoRanks  # noqa: E402  (SyncBatchNorm's passes, no messages)

MODELS = {"mlp": ("sgd", 0.2, 32), "mlp-bn": ("adam", 1e-3, 128), "cnn": ("adam", 1e-3, 128)}
RANKS = [1, 2, 4, 8, 16, 32, 64]
# Between machines (assumed, typical published figures; nothing here measures them):
NETWORKS = {"25 GbE (TCP)": (25e-6, 2.5e9), "100 Gb/s InfiniBand": (2e-6, 11e9)}


def _step(name, batch):
    import fastlayers as fl
    from fastlayers.models import FLAT_INPUT, build
    from fastlayers.train import OPTIMIZERS, Engine
    opt, lr, _ = MODELS[name]
    fl.manual_seed(0)
    model = fl.SyncBatchNorm.convert_sync_batchnorm(build(name), process_group=TwoRanks())
    engine = Engine(model, fl.CrossEntropyLoss(), OPTIMIZERS[opt](model.parameters(), lr=lr))
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784) if FLAT_INPUT[name] else (batch, 1, 28, 28), np.float32)
    y = rng.integers(0, 10, batch)
    return lambda: engine.train_step(x, y)


def compute_times(rounds):
    """{model: {per-rank batch: median seconds of a step}}, one thread."""
    import fastlayers as fl
    fl.set_num_threads(1)
    cases = {}
    for name, (_, _, batch) in MODELS.items():
        for n in RANKS:
            if batch % n == 0 and (batch // n >= 2 or name == "mlp"):
                cases[(name, batch // n)] = _step(name, batch // n)
    for fn in cases.values():   # compile, and warm the caches
        for _ in range(3):
            fn()
    times = {key: [] for key in cases}
    for _ in range(rounds):
        for key, fn in cases.items():
            calls = max(3, int(0.2 / max(times[key][-1] if times[key] else 0.01, 1e-4)))
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[key].append((time.perf_counter() - t0) / calls)
    out = {}
    for (name, b), v in times.items():
        out.setdefault(name, {})[b] = statistics.median(v)
    return out


def _shapes(name):
    import fastlayers as fl
    from fastlayers.models import build
    fl.manual_seed(0)
    model = build(name)
    grad = sum(p.data.nbytes for p in model.parameters())
    norms = [m.num_features for m in model.modules() if isinstance(m, fl.batchnorm._BatchNorm)]
    return grad, norms


def communication(name, n, latency, bandwidth):
    """Modelled seconds of one step's collectives on n ranks (docs/distributed.md)."""
    if n == 1:
        return 0.0
    grad, norms = _shapes(name)
    ring = 2 * (n - 1) / n * grad / bandwidth + 2 * (n - 1) * latency
    for c in norms:
        ring += (n - 1) * ((2 * c + 1) * 8 / bandwidth + latency)                 # allgather
        ring += 2 * (n - 1) / n * 2 * c * 8 / bandwidth + 2 * (n - 1) * latency   # allreduce
    return ring


def predict(compute, links):
    rows = []
    for name, (_, _, batch) in MODELS.items():
        t1 = compute[name][batch]
        for n in RANKS:
            b = batch // n
            if batch % n or b not in compute[name]:
                rows.append((name, n, b if batch % n == 0 else None, None, {}))
                continue
            per = {}
            for link, (lat, bw) in links.items():
                comm = communication(name, n, lat, bw)
                step = compute[name][b] + comm
                per[link] = (step, comm / step, t1 / (n * step))
            rows.append((name, n, b, compute[name][b], per))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--allreduce", required=True, help="asv_bench/allreduce.py --json output")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--compute", default=None, help="reuse a --save-compute JSON")
    p.add_argument("--save-compute", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args()
    measured = json.loads(pathlib.Path(args.allreduce).read_text())
    links = {"here (shared memory)": (measured["latency_s"], measured["bandwidth_Bps"]),
             **NETWORKS}
    if args.compute:
        compute = {k: {int(b): t for b, t in v.items()}
                   for k, v in json.loads(pathlib.Path(args.compute).read_text()).items()}
    else:
        compute = compute_times(args.rounds)
    if args.save_compute:
        pathlib.Path(args.save_compute).write_text(json.dumps(compute, indent=2))
    print(f"links: " + "; ".join(f"{k}: latency {lat * 1e6:.1f} us, bandwidth {bw / 1e9:.2f} GB/s"
                                 for k, (lat, bw) in links.items()))
    rows = predict(compute, links)
    head = " | ".join(f"{k}: step, comm, efficiency" for k in links)
    print(f"\n| model | ranks | batch a rank | compute | {head} |")
    print("|---|---:|---:|---:|" + "---:|" * len(links))
    for name, n, b, comp, per in rows:
        if comp is None:
            print(f"| {name} | {n} | {b if b is not None else '-'} | - |"
                  + " - |" * len(links))
            continue
        cells = " | ".join(f"{s * 1e3:.2f} ms, {c:.0%}, {e:.2f}" for s, c, e in per.values())
        print(f"| {name} | {n} | {b} | {comp * 1e3:.2f} ms | {cells} |")
    print("\nweak scaling (every rank keeps the speed-run batch): efficiency compute / step")
    print(f"\n| model | " + " | ".join(f"{n} ranks" for n in RANKS[1:]) + " |")
    print("|---|" + "---|" * (len(RANKS) - 1))
    weak = {}
    for name, (_, _, batch) in MODELS.items():
        comp = compute[name][batch]
        for link, (lat, bw) in links.items():
            weak[(name, link)] = [comp / (comp + communication(name, n, lat, bw)) for n in RANKS]
            print(f"| {name}, {link} | " + " | ".join(f"{e:.2f}" for e in weak[(name, link)][1:])
                  + " |")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(2, len(links), figsize=(4.2 * len(links), 6.6), sharey=True)
        for ax, link in zip(axes[0], links):
            for name in MODELS:
                pts = [(n, per[link][2]) for m, n, b, comp, per in rows
                       if m == name and comp is not None]
                ax.plot(*zip(*pts), marker="o", label=name)
            ax.set(title=f"{link}: global batch fixed")
        for ax, link in zip(axes[1], links):
            for name in MODELS:
                ax.plot(RANKS, weak[(name, link)], marker="o", label=name)
            ax.set(title=f"{link}: batch a rank fixed")
        for ax in axes.ravel():
            ax.set(xscale="log", xlabel="ranks", ylim=(0, 1.05))
            ax.set_xticks(RANKS, [str(n) for n in RANKS])
            ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel("efficiency T(1) / (N T(N))")
        axes[1, 0].set_ylabel("efficiency compute / step")
        axes[0, 0].legend()
        fig.suptitle("predicted from the measured compute and the ring model; speed-run batch "
                     "(mlp 32, mlp-bn and cnn 128)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
