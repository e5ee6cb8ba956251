"""Print, as Markdown, each speed-run model's training step against its BLAS floor and PyTorch.

For each model, a fresh fastlayers process times, interleaved round by round, the speed run's
training step (the next shuffled batch gathered from Fashion-MNIST, or the embedded mnist-10k where
it is absent, plus ``Engine.train_step``), the same step's GEMMs alone at the same shapes and threads
(``benchmarks/bench_floor.py``: the BLAS floor), and the evaluation pass over a batch of 1000
beside its forward GEMMs alone. A
fresh PyTorch process times the same model (same weights, batches and hyperparameters) the same
way. The two kinds of process alternate, ``--processes`` times each; the table gives the medians
over processes of each process's medians.

    cd asv_bench && python floor.py                      # all three models, all threads
    python floor.py --models mlp mlp-bn --threads 1 --processes 5
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = ["mlp", "mlp-bn", "cnn"]


def worker(kind, model, rounds, blas_threads):
    """Measure in this process and print one JSON line (run by :func:`run_worker`)."""
    from benchmarks import common
    if kind == "torch":
        common.torch()    # imports torch before anything starts Numba's threads; sets its threads
    elif blas_threads is not None:
        import fastlayers
        fastlayers.set_num_threads(None, blas_threads)
    from benchmarks import bench_floor
    data = bench_floor.dataset()
    if kind == "torch":
        from benchmarks.common import interleaved_medians
        run = bench_floor.SpeedRun(model, data, torch=True)
        med = interleaved_medians({"step": run.step, "eval": run.evaluate}, rounds=rounds,
                                  min_time=20e-3)
        result = {"step_s": med["step"], "eval_s": med["eval"]}
    else:
        result = bench_floor.measure(model, rounds=rounds, data=data)
    result["batch"] = bench_floor.MODELS[model][2]
    result["dataset"] = data.name
    print(json.dumps(result))


def run_worker(kind, model, rounds, threads, blas_threads):
    env = dict(os.environ)
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    extra = [] if blas_threads is None else ["--blas-threads", str(blas_threads)]
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--models", model,
                          "--rounds", str(rounds), *extra], env=env, check=True,
                         capture_output=True, text=True, cwd=HERE).stdout
    return json.loads(out.strip().splitlines()[-1])


def _ms(seconds):
    return f"{seconds * 1e3:.3g} ms"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds in each process")
    p.add_argument("--processes", type=int, default=3,
                   help="fresh processes per framework and model, alternating")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both frameworks (default: NUMBA_NUM_THREADS, all CPUs)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="BLAS threads for fastlayers (default: as many as its kernels get)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch processes")
    p.add_argument("--worker", choices=["fastlayers", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.models[0], args.rounds, args.blas_threads)

    from benchmarks import common
    use_torch = not args.no_torch and common.has_torch()
    t0 = time.perf_counter()
    print("| model | batch | step | BLAS floor | step / floor | GFLOP/s step / floor | "
          "torch step | step / torch | eval batch (1000) | its floor | torch eval | eval "
          "throughput vs torch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models:
        fl_runs, torch_runs = [], []
        for _ in range(args.processes):
            fl_runs.append(run_worker("fastlayers", model, args.rounds, args.threads,
                                      args.blas_threads))
            if use_torch:
                torch_runs.append(run_worker("torch", model, args.rounds, args.threads, None))

        def med(runs, key):
            return statistics.median(r[key] for r in runs)
        step, floor, ev = med(fl_runs, "step_s"), med(fl_runs, "floor_s"), med(fl_runs, "eval_s")
        ev_floor = med(fl_runs, "eval_floor_s")
        flops = fl_runs[0]["gemm_flops"]
        cols = [model, str(fl_runs[0]["batch"]), _ms(step), _ms(floor), f"{step / floor:.2f}",
                f"{flops / step / 1e9:.0f} / {flops / floor / 1e9:.0f}"]
        if torch_runs:
            t_step, t_ev = med(torch_runs, "step_s"), med(torch_runs, "eval_s")
            cols += [_ms(t_step), f"{step / t_step:.2f}", _ms(ev), _ms(ev_floor), _ms(t_ev),
                     f"{t_ev / ev:.2f}x"]
        else:
            cols += ["n/a", "n/a", _ms(ev), _ms(ev_floor), "n/a", "n/a"]
        print("| " + " | ".join(cols) + " |", flush=True)
    threads = args.threads or common.NUM_THREADS
    print()
    print(f"Medians over {args.processes} alternating fresh processes per framework of "
          f"{args.rounds} interleaved rounds each; float32, {fl_runs[0]['dataset']}, "
          f"{threads} thread(s) for both frameworks"
          f"{'' if args.blas_threads is None else f' ({args.blas_threads} for BLAS)'}, "
          f"{cpu_model()}. step / torch below 1: "
          f"fastlayers faster; eval throughput above 1x: fastlayers faster. "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
