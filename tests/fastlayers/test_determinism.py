"""A seed means one result on any thread count. Under
``fastlayers.use_deterministic_algorithms(True)`` each speed-run model, trained for a few dozen
steps from one seed in fresh interpreters started with 1 and with 2 Numba threads, ends with
bitwise identical parameters and buffers.

The mlp and mlp-bn runs fail without the switch on the machines seen here (their 784-input GEMM
rounds differently on one and two BLAS threads, see fastlayers/runtime.py); the cnn run checks the
thread independence of the convolution and BatchNorm2d kernels. Without the switch nothing is
asserted about the hashes: two thread counts may agree by chance.
"""
import json
import os
import subprocess
import sys

import pytest

# The speed-run settings (fastlayers/mnist.py DEFAULTS), fewer steps; cnn on a subset of the images.
RUNS = {  # model: (optimizer, lr, batch size, steps, training images)
    "mlp": ("SGD", 0.2, 32, 60, None),
    "mlp-bn": ("Adam", 1e-3, 128, 30, None),
    "cnn": ("Adam", 1e-3, 128, 16, 1024),
}

TRAIN = """
import hashlib, json, sys
import fastlayers as fl
from fastlayers.models import FLAT_INPUT, build
from fastlayers.train import Engine

name, opt, lr, batch, steps, subset, deterministic, all_parallel = json.loads(sys.argv[1])
if all_parallel:   # every compiled kernel on its parallel build, however small the call
    import importlib, pkgutil, kernels
    for family in pkgutil.iter_modules(kernels.__path__):
        for obj in vars(importlib.import_module("kernels." + family.name)).values():
            if getattr(obj, "parallel_min", None) is not None:
                obj.parallel_min = 0
if deterministic:
    fl.use_deterministic_algorithms(True)
fl.manual_seed(0)
ds = fl.data.load_dataset("mnist-10k")
x, y = (ds.x_train, ds.y_train) if subset is None else (ds.x_train[:subset], ds.y_train[:subset])
model = build(name)
engine = Engine(model, fl.CrossEntropyLoss(), getattr(fl, opt)(model.parameters(), lr=lr))
loader = fl.data.DataLoader(x, y, batch, shuffle=True, flatten=FLAT_INPUT[name])
done = 0
while done < steps:
    for xb, yb in loader:
        engine.train_step(xb, yb)
        done += 1
        if done == steps:
            break
digest = hashlib.sha256()
for key, value in model.state_dict().items():   # parameters and buffers
    digest.update(key.encode())
    digest.update(str(value.dtype).encode())
    digest.update(value.tobytes())
print(json.dumps([fl.get_num_threads(), fl.get_blas_threads(), digest.hexdigest()]))
"""


def _train(name, threads, deterministic, all_parallel=False):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    # this process's fastlayers import defaulted these: a fresh run must default them itself
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
                "OMP_WAIT_POLICY"):
        env.pop(var, None)
    args = json.dumps([name, *RUNS[name], deterministic, all_parallel])
    # a bound against a hang, not a speed check: a first run compiles the model's kernels, and the
    # suite's other workers compile theirs on the same CPUs
    out = subprocess.run([sys.executable, "-c", TRAIN, args], env=env, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, all_parallel", [(n, False) for n in sorted(RUNS)]
                         + [("mlp-bn", True)])
def test_same_seed_same_bits_on_one_and_two_threads(name, all_parallel):
    # all_parallel: the small calls that normally take a kernel's serial build run its parallel
    # build too, so every prange loop the model reaches is checked on two threads
    one = _train(name, 1, deterministic=True, all_parallel=all_parallel)
    two = _train(name, 2, deterministic=True, all_parallel=all_parallel)
    assert one[:2] == [1, 1] and two[:2] == [2, 1]   # the kernels really ran on two threads
    assert one[2] == two[2]


def test_by_default_blas_keeps_one_thread_and_the_bits_do_not_depend_on_the_threads():
    one = _train("mlp", 1, deterministic=False)
    two = _train("mlp", 2, deterministic=False)
    assert one[:2] == [1, 1] and two[:2] == [2, 1]
    assert one[2] == two[2]
