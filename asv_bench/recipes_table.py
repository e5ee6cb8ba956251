"""The speed-run recipes against PyTorch on the same recipe, over several seeds: the results table
of docs/benchmarks.md and the README.

    python asv_bench/recipes_table.py [--recipes fashion-93 ...] [--seeds 0 1 2] [--threads N]
                                      [--json-dir DIR]

Each (recipe, seed) is one ``python -m fastlayers.mnist --recipe R --seed S --compare-torch`` run
in a fresh process: fastlayers and PyTorch train the identical recipe (model, initial weights,
batch order, crops and flips, schedule), their epochs alternating so both see the same machine
load, and each stops at the end of the first epoch whose test accuracy reaches the target. Its
time to target is the training time up to there (steps and augmentation; not compilation, data
loading or evaluation). Prints per recipe: median and range over the seeds of both times to
target, of the per-run ratio fastlayers / PyTorch, of fastlayers' final accuracy and epochs, and
whether every seed reached the target in both frameworks; then the CPU model and commit.
"""
import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(recipe, seed, threads, path):
    """One side-by-side run; returns its JSON report."""
    cmd = [sys.executable, "-m", "fastlayers.mnist", "--recipe", recipe, "--seed", str(seed),
           "--compare-torch", "--no-progress", "--json", str(path)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(path.read_text())


def _spread(values, fmt, unit=""):
    """'median (min-max)' of the values that exist, or '-'."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = fmt(statistics.median(values)) + unit
    return med if len(values) == 1 else f"{med} ({fmt(min(values))}-{fmt(max(values))}{unit})"


def row(recipe, reports):
    """The table row of one recipe from its runs' reports."""
    from fastlayers.recipes import get
    r = get(recipe)
    ours = [rep["results"]["fastlayers"] for rep in reports]
    theirs = [rep["results"]["pytorch"] for rep in reports]
    ratios = [o["time_to_target_s"] / t["time_to_target_s"]
              if o["time_to_target_s"] and t["time_to_target_s"] else None
              for o, t in zip(ours, theirs)]
    reached = [o["time_to_target_s"] is not None for o in ours]
    reached_torch = [t["time_to_target_s"] is not None for t in theirs]
    epochs = [len(o["epochs"]) for o in ours]
    seconds = "{:.1f}".format
    return (f"| {recipe} | {r.target_accuracy:.1%} | "
            f"{_spread([o['time_to_target_s'] for o in ours], seconds, ' s')} | "
            f"{_spread([t['time_to_target_s'] for t in theirs], seconds, ' s')} | "
            f"{_spread(ratios, '{:.2f}'.format, 'x')} | "
            f"{_spread([o['final_test_accuracy'] for o in ours], lambda v: f'{v:.2%}')} | "
            f"{_spread(epochs, '{:g}'.format)} of {r.epochs} | "
            f"{sum(reached)}/{len(reached)} ({sum(reached_torch)}/{len(reached_torch)}) |")


HEADER = ("| recipe | target | fastlayers time to target | PyTorch time to target | "
          "fastlayers / PyTorch | fastlayers final accuracy | epochs | seeds reaching it "
          "(PyTorch) |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def main(argv=None):
    from fastlayers.recipes import RECIPES
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=None,
                   help="kernel threads for both frameworks (default: all)")
    p.add_argument("--json-dir", default=None, help="keep every run's JSON report here")
    p.add_argument("--reuse", action="store_true",
                   help="take a (recipe, seed) report already in --json-dir instead of running it "
                        "(runs split over several invocations, e.g. concurrent 1-thread jobs)")
    args = p.parse_args(argv)
    out = pathlib.Path(args.json_dir or tempfile.mkdtemp(prefix="recipes-"))
    out.mkdir(parents=True, exist_ok=True)
    rows, commit = [], None
    for recipe in args.recipes:
        reports = []
        for seed in args.seeds:
            path = out / f"{recipe}-seed{seed}.json"
            report = (json.loads(path.read_text()) if args.reuse and path.exists()
                      else run(recipe, seed, args.threads, path))
            commit = report["git"]["commit"]
            ours, theirs = report["results"]["fastlayers"], report["results"]["pytorch"]
            print(f"{recipe} seed {seed}: fastlayers {ours['time_to_target_s']} s "
                  f"({len(ours['epochs'])} epochs, {ours['final_test_accuracy']:.2%}), pytorch "
                  f"{theirs['time_to_target_s']} s ({len(theirs['epochs'])} epochs, "
                  f"{theirs['final_test_accuracy']:.2%})", flush=True)
            reports.append(report)
        rows.append(row(recipe, reports))
    env = reports[-1]["environment"]
    print()
    print(HEADER)
    print("\n".join(rows))
    print(f"\n{cpu_model()}, {env['threads']} threads (fastlayers BLAS {env['blas_threads']}; "
          f"PyTorch {env.get('torch_threads')}), torch {env.get('torch')}, commit "
          f"{(commit or 'unknown')[:7]}; seeds {' '.join(map(str, args.seeds))}; reports in {out}")


if __name__ == "__main__":
    main()
