"""Cold start: a fresh Python process importing fastlayers and running the first training step of a
speed-run model on the numba backend, with and without Numba's on-disk cache.

    cold  NUMBA_CACHE_DIR points at a new, empty directory: every kernel the step uses compiles.
    warm  NUMBA_CACHE_DIR points at a directory an earlier process filled with the same step:
          kernels load from the cache.

The timed statement (in a subprocess, by asv's timeraw) is the imports plus model building plus one
step; only setting NUMBA_CACHE_DIR is untimed.
"""
import hashlib
import pathlib
import subprocess
import sys
import tempfile

import kernels
import numba

MODELS = ["mlp", "mlp-bn", "cnn"]
CACHES = ["cold", "warm"]

CHILD_PRELUDE = """
import atexit, os, shutil
os.environ["NUMBA_CACHE_DIR"] = {cache_dir!r}
if {remove}:
    atexit.register(shutil.rmtree, {cache_dir!r}, True)
"""

CHILD_STEP = """
import numpy as np
import fastlayers as fl
from fastlayers.models import FLAT_INPUT, build
from fastlayers.train import OPTIMIZERS, Engine
opt, lr, batch = {{"mlp": ("sgd", 0.05, 64), "mlp-bn": ("adam", 1e-3, 128),
                  "cnn": ("adam", 1e-3, 128)}}[{model!r}]
fl.manual_seed(0)
model = build({model!r})
rng = np.random.default_rng(0)
shape = (batch, 784) if FLAT_INPUT[{model!r}] else (batch, 1, 28, 28)
x = rng.random(shape, dtype=np.float32)
y = rng.integers(0, 10, batch)
eng = Engine(model, fl.CrossEntropyLoss(), OPTIMIZERS[opt](model.parameters(), lr=lr))
eng.train_step(x, y)
"""


def _warm_dir(model):
    """A cache directory filled by one earlier run of the step (made on first use; keyed on the
    kernels' sources, Numba's version and the interpreter, so an edit gets a fresh directory)."""
    h = hashlib.sha256(f"{sys.executable} {numba.__version__} {model}".encode())
    for path in sorted(pathlib.Path(kernels.__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    d = pathlib.Path(tempfile.gettempdir()) / f"fastlayers-asv-numba-cache-{h.hexdigest()[:16]}"
    done = d / "warmed"
    if not done.exists():
        d.mkdir(parents=True, exist_ok=True)
        code = CHILD_PRELUDE.format(cache_dir=str(d), remove=False) + CHILD_STEP.format(model=model)
        subprocess.run([sys.executable, "-c", code], check=True)
        done.write_text("ok\n")
    return str(d)


class ColdStart:
    params = [MODELS, CACHES]
    param_names = ["model", "numba_cache"]
    timeout = 900
    number = 1
    repeat = (1, 3, 60.0)
    rounds = 1
    warmup_time = 0

    def setup(self, model, cache):
        try:
            import fastlayers.models  # noqa: F401
        except ImportError:
            raise NotImplementedError("fastlayers.models has not landed")

    def timeraw_import_and_first_step(self, model, cache):
        if cache == "cold":
            cache_dir, remove = tempfile.mkdtemp(prefix="fastlayers-asv-cold-"), True
        else:
            cache_dir, remove = _warm_dir(model), False
        return (CHILD_STEP.format(model=model), CHILD_PRELUDE.format(cache_dir=cache_dir, remove=remove))

