"""MPI allreduce latency and bandwidth here, and the ways to average a model's gradients.

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \\
        mpiexec -n 2 python -m mpi4py asv_bench/allreduce.py [--rounds 15] [--json out.json]

Every figure is the median over ``--rounds`` interleaved rounds of the time of one call, each
round timing a loop of calls that every rank starts together (after a barrier), so waiting for a
late rank is not counted. Rank 0 prints:

- latency: a one-float64 allreduce; bandwidth: allreduces of 1 to 16 MB, both read through the
  ring model t = 2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) * latency (docs/distributed.md);
- the same for the small collectives SyncBatchNorm uses (an allgather of 2C + 1 float64);
- each speed-run model's gradient averaged four ways: one allreduce per parameter; one over a
  packed buffer (copy in, allreduce, copy back: DistributedDataParallel's default); one over the
  buffer the gradients live in (gradient_as_bucket_view=True, no copies); 1 MB buckets.
"""
import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from mpi4py import MPI

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
SIZES = [8, 1 << 10, 1 << 13, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24]   # bytes


def timed(fn, calls):
    COMM.Barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def calls_for(nbytes):
    return int(min(2000, max(5, (1 << 24) // max(nbytes, 1))))


def medians(cases, rounds):
    """{name: median seconds per call} over interleaved rounds of every case."""
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, calls) in cases.items():
            times[name].append(timed(fn, calls))
    return {name: statistics.median(v) for name, v in times.items()}


def ring_fit(t, n):
    """(latency, bandwidth) of the ring model t = 2 (n-1)/n * B / bw + 2 (n-1) * lat: the latency
    from the 8-byte allreduce, the bandwidth the median over the sizes from 1 MB of
    2 (n-1)/n * B / (t - 2 (n-1) * lat)."""
    lat = t["allreduce 8 B"] / (2 * (n - 1))
    bws = [2 * (n - 1) / n * b / (t[f"allreduce {b} B"] - 2 * (n - 1) * lat)
           for b in SIZES if b >= 1 << 20]
    return lat, float(statistics.median(bws))


def model_grads(name):
    """The gradient shapes of a speed-run model (from fastlayers.models)."""
    import fastlayers as fl
    from fastlayers.models import build
    fl.manual_seed(0)
    return [p.shape for p in build(name).parameters()]


def strategies(shapes):
    grads = [np.ones(s, np.float32) for s in shapes]
    flat = np.ones(sum(g.size for g in grads), np.float32)
    views = []
    at = 0
    for g in grads:
        views.append(flat[at:at + g.size].reshape(g.shape))
        at += g.size
    cap = (1 << 20) // 4
    buckets, start, count = [], 0, 0
    for g in grads:
        if count and count + g.size > cap:
            buckets.append(flat[start:start + count])
            start, count = start + count, 0
        count += g.size
    buckets.append(flat[start:start + count])

    def per_parameter():
        for g in grads:
            COMM.Allreduce(MPI.IN_PLACE, g)
            g /= np.float32(SIZE)

    def packed():
        for g, v in zip(grads, views):
            v[...] = g
        COMM.Allreduce(MPI.IN_PLACE, flat)
        np.divide(flat, np.float32(SIZE), out=flat)
        for g, v in zip(grads, views):
            g[...] = v

    def bucket_view():
        COMM.Allreduce(MPI.IN_PLACE, flat)
        np.divide(flat, np.float32(SIZE), out=flat)

    def buckets_1mb():
        for b in buckets:
            COMM.Allreduce(MPI.IN_PLACE, b)
            b /= np.float32(SIZE)

    return flat.nbytes, {"per parameter": per_parameter, "packed (copy in/out)": packed,
                         "bucket view (no copy)": bucket_view, "1 MB buckets": buckets_1mb}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if SIZE < 2:
        sys.exit("run it under mpiexec -n 2 (or more): it measures communication between ranks")

    bufs = {b: np.ones(max(1, b // 8), np.float64) for b in SIZES}
    cases = {f"allreduce {b} B": ((lambda a=a: COMM.Allreduce(MPI.IN_PLACE, a)), calls_for(b))
             for b, a in bufs.items()}
    for c in (16, 128, 512):
        send = np.ones(2 * c + 1)
        recv = np.empty((SIZE, 2 * c + 1))
        cases[f"allgather 2x{c}+1 float64"] = (
            (lambda s=send, r=recv: COMM.Allgather(s, r)), 500)
    cases["barrier"] = (COMM.Barrier, 2000)
    t = medians(cases, args.rounds)
    lat, bw = ring_fit(t, SIZE)

    models = {}
    for name in ("mlp", "mlp-bn", "cnn"):
        nbytes, fns = strategies(model_grads(name))
        models[name] = {"bytes": nbytes, **medians({k: (f, 20) for k, f in fns.items()},
                                                   args.rounds)}

    if RANK != 0:
        return
    print(f"{SIZE} ranks, {MPI.Get_library_version().splitlines()[0]}; CPU: {cpu_model()}; "
          f"medians of {args.rounds} rounds")
    print("\n| collective | size | median |\n|---|---:|---:|")
    for b in SIZES:
        print(f"| allreduce | {b:,} B | {t[f'allreduce {b} B'] * 1e6:.1f} us |")
    for c in (16, 128, 512):
        print(f"| allgather (SyncBatchNorm, C={c}) | {(2 * c + 1) * 8:,} B a rank | "
              f"{t[f'allgather 2x{c}+1 float64'] * 1e6:.1f} us |")
    print(f"| barrier | | {t['barrier'] * 1e6:.1f} us |")
    print(f"\nring model: latency {lat * 1e6:.2f} us (8-byte allreduce / (2 (N-1))), bandwidth "
          f"{bw / 1e9:.2f} GB/s (median over 1-16 MB)")
    print("\n| model | gradient | per parameter | packed (copy in/out) | bucket view (no copy) "
          "| 1 MB buckets |\n|---|---:|---:|---:|---:|---:|")
    for name, m in models.items():
        cells = " | ".join(f"{m[k] * 1e6:.0f} us" for k in ("per parameter", "packed (copy in/out)",
                                                             "bucket view (no copy)",
                                                             "1 MB buckets"))
        print(f"| {name} | {m['bytes'] / 1e6:.2f} MB | {cells} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ranks": SIZE, "cpu": cpu_model(), "mpi": MPI.Get_library_version(),
                       "rounds": args.rounds, "seconds": t, "latency_s": lat, "bandwidth_Bps": bw,
                       "models": models}, f, indent=2)


if __name__ == "__main__":
    main()
