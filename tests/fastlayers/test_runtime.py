"""Thread settings (fastlayers/runtime.py): BLAS gets the kernels' threads only when its idle workers
sleep, which depends on what was imported before fastlayers; checked in fresh interpreters."""
import json
import os
import subprocess
import sys

import pytest

import fastlayers as fl

REPORT = ("import fastlayers as fl, kernels, json; "
          "print(json.dumps([kernels.BLAS_WORKERS_SLEEP, fl.get_num_threads(), fl.get_blas_threads()]))")


def _fresh(code, **env):
    full = dict(os.environ, NUMBA_NUM_THREADS="2")
    full.pop("OPENBLAS_THREAD_TIMEOUT", None)  # this process's kernels import set it
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_blas_follows_kernel_threads_when_fastlayers_loads_first():
    assert _fresh(REPORT) == [True, 2, 2]


@pytest.mark.parametrize("first", ["numpy", "scipy.linalg"])
def test_blas_stays_on_one_thread_when_openblas_loaded_first(first):
    # OpenBLAS read its (unset) timeout when it loaded: its workers busy-wait, so one thread only.
    assert _fresh(f"import {first}; " + REPORT) == [False, 2, 1]


def test_user_set_timeout_counts_as_sleeping_workers():
    assert _fresh("import numpy; " + REPORT, OPENBLAS_THREAD_TIMEOUT="4") == [True, 2, 2]


def test_set_num_threads_sets_both_pools_and_validates():
    threads, blas = fl.get_num_threads(), fl.get_blas_threads()
    try:
        fl.set_num_threads(1)
        assert (fl.get_num_threads(), fl.get_blas_threads()) == (1, 1)
        fl.set_num_threads(1, blas_threads=2)
        assert fl.get_blas_threads() == 2
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="blas_threads must be an integer >= 1"):
                fl.set_num_threads(1, blas_threads=bad)
        with pytest.raises(ValueError, match=r"threads must be an integer in \[1, "):
            fl.set_num_threads(10_000)
        # a rejected call changes nothing
        assert (fl.get_num_threads(), fl.get_blas_threads()) == (1, 2)
    finally:
        fl.set_num_threads(threads, blas_threads=blas)
