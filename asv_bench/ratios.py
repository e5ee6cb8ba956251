"""Print, as Markdown, the side-by-side table of numba vs numpy vs torch per kernel family.

For each family at its training shape (the ``TRAINING`` rows of benchmarks/bench_<family>.py: the
same cases the asv suite times; a row is (label, key), or (label, key, factory) for a family of the
module other than its ``make_train`` or ``make``), the time of forward + backward (or one optimizer
step) on each implementation, measured in one process, interleaved round by round, as medians;
then the ratios of the times (below 1: numba is faster). With --models, also one training step of
each speed-run model.

    cd asv_bench && python ratios.py              # all families and models (a few minutes)
    python ratios.py --families linear softmax --rounds 21 --no-models
"""
import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmarks import common  # noqa: E402  (first: settles the thread settings)

FAMILIES = ["linear", "activations", "softmax", "losses", "batchnorm", "dropout", "conv", "pool",
            "adaptive_pool", "fused", "optim", "clip", "layernorm", "embedding", "data", "syncbn"]


def _shape_text(key):
    first = key[0]
    if isinstance(first, tuple):
        return "x".join(map(str, first))
    return str(first)


def _fmt_time(seconds):
    if seconds is None:
        return "n/a"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _fmt_ratio(a, b):
    if a is None or b is None:
        return "n/a"
    return f"{a / b:.2f}"


def family_rows(name):
    """(row label, shape text, {impl: {fn name: callable}}) for each training row of a family."""
    mod = importlib.import_module(f"benchmarks.bench_{name}")
    default = getattr(mod, "make_train", None) or mod.make
    for label, key, *factory in mod.TRAINING:
        make = factory[0] if factory else default
        impls = {}
        for impl in common.IMPLS:
            try:
                impls[impl] = make(impl, *key).fns
            except NotImplementedError:
                impls[impl] = None
        yield f"{name}: {label}", _shape_text(key), impls


def model_rows():
    from benchmarks import bench_models
    import fastlayers as fl
    for model, (opt, _, batch) in bench_models.MODELS.items():
        impls = {}
        for impl in common.IMPLS:
            try:
                eng = bench_models.engine(impl, model)
            except NotImplementedError:
                impls[impl] = None
                continue
            x, y = bench_models.inputs(model, batch)
            backend = "numba" if impl == "torch" else impl

            def step(eng=eng, backend=backend, x=x, y=y):
                fl.set_backend(backend)
                eng.train(True)
                eng.train_step(x, y)
            impls[impl] = {"train_step": step}
        yield f"model: {model} training step ({opt})", f"batch {batch}", impls


def measure(impls, rounds):
    """Median seconds of each implementation, summed over its callables, all interleaved."""
    fns = {}
    for impl, group in impls.items():
        for fn_name, fn in (group or {}).items():
            fns[(impl, fn_name)] = fn
    med = common.interleaved_medians(fns, rounds=rounds)
    out = {}
    for impl, group in impls.items():
        out[impl] = None if group is None else sum(med[(impl, f)] for f in group)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=FAMILIES)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds per row (median)")
    p.add_argument("--no-models", action="store_true", help="skip the model training-step rows")
    args = p.parse_args(argv)

    common.has_torch()   # imports torch (when installed) before any kernel starts Numba's threads
    rows = [r for f in args.families for r in family_rows(f)]
    if not args.no_models:
        rows += list(model_rows())
    t0 = time.perf_counter()
    print("| kernel (forward + backward) | shape | numba | numpy | torch | numba/numpy | "
          "numba/torch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, shape, impls in rows:
        t = measure(impls, args.rounds)
        print(f"| {label} | {shape} | {_fmt_time(t['numba'])} | {_fmt_time(t['numpy'])} | "
              f"{_fmt_time(t['torch'])} | {_fmt_ratio(t['numba'], t['numpy'])} | "
              f"{_fmt_ratio(t['numba'], t['torch'])} |", flush=True)
    print()
    print(f"Medians of {args.rounds} interleaved rounds, float32, one process; ratios are time "
          f"ratios (below 1: numba faster). {common.env_summary()}; torch threads = numba threads. "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
