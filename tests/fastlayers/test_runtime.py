"""Thread settings (fastlayers/runtime.py): BLAS keeps one thread unless asked for more; idle BLAS
workers sleep whatever was imported before fastlayers (or a request for more BLAS threads warns);
PyTorch, imported for comparisons, keeps an OpenMP runtime and settings of its own. Checked in fresh
interpreters."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlayers as fl

REPORT = ("import fastlayers as fl, kernels, json; "
          "print(json.dumps([kernels.BLAS_WORKERS_SLEEP, fl.get_num_threads(), fl.get_blas_threads()]))")


def _fresh(code, **env):
    full = dict(os.environ, NUMBA_NUM_THREADS="2")
    full.pop("OPENBLAS_THREAD_TIMEOUT", None)  # this process's kernels import set it
    for name, value in env.items():
        if value is None:   # leave the variable out
            full.pop(name, None)
        else:
            full[name] = value
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                         check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_blas_keeps_one_thread_by_default():
    assert _fresh(REPORT) == [True, 2, 1]


WARNINGS = ("import warnings, json\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    {code}\n"
            "    import fastlayers as fl, kernels\n"
            "print(json.dumps([kernels.BLAS_WORKERS_SLEEP, fl.get_blas_threads(),\n"
            "                  [str(w.message) for w in caught if w.category is RuntimeWarning]]))")


@pytest.mark.parametrize("first", ["numpy", "scipy.linalg", "numpy, scipy.linalg"])
def test_openblas_loaded_first_is_restarted_with_sleeping_workers(first):
    # OpenBLAS read its (unset) timeout when it loaded; the import makes it re-read the environment
    # and restart its workers, so more BLAS threads may be asked for and nothing needs saying.
    code = f"import {first}\n    import fastlayers\n    fastlayers.set_num_threads(None, 2)"
    assert _fresh(WARNINGS.format(code=code)) == [True, 2, []]


def test_blas_workers_sleep_after_numpy_first():
    # Idle workers that busy-wait burn CPU while the main thread sleeps after a 2-thread GEMM.
    code = ("import numpy as np, fastlayers, time, json\n"
            "fastlayers.set_num_threads(None, blas_threads=2)\n"
            "a = np.ones((512, 784), np.float32); b = np.ones((784, 512), np.float32)\n"
            "cpu = 0.0\n"
            "for _ in range(10):\n"
            "    a @ b; c0 = time.process_time(); time.sleep(0.05); cpu += time.process_time() - c0\n"
            "print(json.dumps([fastlayers.get_blas_threads(), cpu]))")
    threads, cpu = _fresh(code)
    assert threads == 2 and cpu < 0.1    # busy-waiting workers burn about 0.2-0.5 s here


def test_warns_once_when_openblas_cannot_be_restarted():
    # An OpenBLAS without the two entry points keeps busy-waiting workers: a request for more BLAS
    # threads is honoured and says so once, naming the fix.
    hide = ("import numpy, threadpoolctl\n"
            "    class NoRestart(threadpoolctl.ThreadpoolController):\n"
            "        def select(self, **kw):\n"
            "            chosen = super().select(**kw)\n"
            "            for c in chosen.lib_controllers:\n"
            "                c.dynlib = object()\n"
            "            return chosen\n"
            "    threadpoolctl.ThreadpoolController = NoRestart\n"
            "    import fastlayers\n"
            "    fastlayers.set_num_threads(None, 2)\n"
            "    fastlayers.set_num_threads(None, 2)")
    sleep, blas, messages = _fresh(WARNINGS.format(code=hide))
    assert (sleep, blas, len(messages)) == (False, 2, 1)
    assert "Import fastlayers before numpy" in messages[0]
    assert "OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=PASSIVE" in messages[0]


def test_no_warning_when_fastlayers_loads_first():
    assert _fresh(WARNINGS.format(code="pass")) == [True, 1, []]


def test_user_set_timeout_counts_as_sleeping_workers():
    assert _fresh("import numpy; " + REPORT, OPENBLAS_THREAD_TIMEOUT="4") == [True, 2, 1]


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


@pytest.fixture
def restore_threads():
    threads, blas = fl.get_num_threads(), fl.get_blas_threads()
    yield
    fl.use_deterministic_algorithms(False)
    fl.set_num_threads(threads, blas_threads=blas)


@pytest.mark.parametrize("bad", [1, 0, None, "True", 1.0])
def test_deterministic_switch_takes_only_a_bool(restore_threads, bad):
    with pytest.raises(TypeError, match="mode must be True or False"):
        fl.use_deterministic_algorithms(bad)
    assert fl.are_deterministic_algorithms_enabled() is False


def test_deterministic_switch_pins_blas_and_gives_its_threads_back(restore_threads):
    fl.set_num_threads(1, blas_threads=2)
    fl.use_deterministic_algorithms(True)
    assert fl.are_deterministic_algorithms_enabled() is True
    assert (fl.get_num_threads(), fl.get_blas_threads()) == (1, 1)
    fl.set_num_threads(fl.runtime.numba.config.NUMBA_NUM_THREADS)  # kernels: any count, BLAS: one
    assert fl.get_blas_threads() == 1
    fl.set_num_threads(1, blas_threads=1)
    fl.runtime.settle()
    assert fl.get_blas_threads() == 1
    fl.use_deterministic_algorithms(np.True_)   # NumPy's bool is a bool too
    fl.use_deterministic_algorithms(False)
    assert fl.are_deterministic_algorithms_enabled() is False
    # what settle() asked for: BLAS's default one thread
    assert fl.get_blas_threads() == fl.runtime.DEFAULT_BLAS_THREADS == 1


def test_set_num_threads_refuses_more_blas_threads_while_deterministic(restore_threads):
    fl.set_num_threads(1)
    fl.use_deterministic_algorithms(True)
    with pytest.raises(ValueError, match="contradicts deterministic algorithms"):
        fl.set_num_threads(2 if fl.runtime.numba.config.NUMBA_NUM_THREADS > 1 else 1,
                           blas_threads=2)
    # the failed call changed nothing
    assert (fl.get_num_threads(), fl.get_blas_threads()) == (1, 1)
    with pytest.raises(ValueError, match="blas_threads must be an integer >= 1"):
        fl.set_num_threads(1, blas_threads=0)   # checked as without the switch
    fl.use_deterministic_algorithms(False)
    fl.set_num_threads(1, blas_threads=2)
    assert fl.get_blas_threads() == 2


def test_deterministic_mode_in_a_fresh_interpreter():
    code = ("import fastlayers as fl, json\n"
            "fl.use_deterministic_algorithms(True)\n"
            "fl.set_num_threads(2)\n"
            "print(json.dumps([fl.get_num_threads(), fl.get_blas_threads()]))")
    assert _fresh(code) == [2, 1]


def test_importing_fastlayers_leaves_numba_threads_unstarted():
    # (so that PyTorch can still be imported with an OpenMP runtime of its own)
    code = ("import fastlayers, numba, json\n"
            "try:\n    numba.threading_layer(); started = True\n"
            "except ValueError:\n    started = False\n"
            "print(json.dumps([started, fastlayers.get_blas_threads()]))")
    assert _fresh(code) == [False, 1]


# A stand-in for torch, first on sys.path of a fresh interpreter: it records the wait policy its
# import saw (PyTorch's libgomp reads it when it loads).
FAKE_TORCH = "import os\nseen = os.environ.get('OMP_WAIT_POLICY')\n"
IMPORT_TORCH = ("import fastlayers, os, json, warnings\n"
                "{before}\n"
                "with warnings.catch_warnings(record=True) as caught:\n"
                "    warnings.simplefilter('always')\n"
                "    t = fastlayers.runtime.import_torch()\n"
                "print(json.dumps([getattr(t, 'seen', 'absent') if t else None,\n"
                "                  os.environ.get('OMP_WAIT_POLICY'),\n"
                "                  [w.category.__name__ for w in caught]]))")


def _with_fake_torch(tmp_path, body=FAKE_TORCH, before="", **env):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(body)
    return _fresh(IMPORT_TORCH.format(before=before), PYTHONPATH=str(tmp_path), **env)


def test_import_torch_hides_the_wait_policy_fastlayers_defaulted(tmp_path):
    # defaulted by fastlayers: hidden while torch loads, restored after
    assert _with_fake_torch(tmp_path, OMP_WAIT_POLICY=None) == [None, "PASSIVE", []]


def test_import_torch_keeps_a_wait_policy_the_user_set(tmp_path):
    assert _with_fake_torch(tmp_path, OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "ACTIVE", []]


def test_import_torch_warns_once_numba_threads_run(tmp_path):
    got = _with_fake_torch(tmp_path, before="fastlayers.set_num_threads(1)", OMP_WAIT_POLICY=None)
    assert got == [None, "PASSIVE", ["RuntimeWarning"]]


def test_import_torch_without_torch_returns_none_and_restores(tmp_path):
    got = _with_fake_torch(tmp_path, body="raise ImportError('no torch here')",
                           OMP_WAIT_POLICY=None)
    assert got == [None, "PASSIVE", []]


def test_torch_and_numba_get_separate_openmp_runtimes():
    pytest.importorskip("torch")
    code = ("import fastlayers, json, numba\n"
            "fastlayers.runtime.import_torch()\n"
            "fastlayers.set_num_threads(2)\n"   # starts Numba's threads
            "from threadpoolctl import threadpool_info\n"
            "libs = [i['filepath'] for i in threadpool_info() if i['internal_api'] == 'openmp']\n"
            "print(json.dumps([numba.threading_layer(), libs]))")
    layer, libs = _fresh(code, OMP_WAIT_POLICY=None)
    if layer != "omp":
        pytest.skip(f"Numba's threading layer here is {layer}, not OpenMP")
    torch_dir = os.sep + "torch" + os.sep
    assert len(libs) == 2 and sum(torch_dir in p for p in libs) == 1, libs


ALLOCATOR = "import fastlayers, json; print(json.dumps(fastlayers.runtime.freed_memory_kept()))"


def test_import_keeps_freed_memory_on_glibc():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    assert _fresh(ALLOCATOR) is True


@pytest.mark.parametrize("value", ["0", " 0 "])
def test_keep_freed_memory_opt_out_leaves_glibc_alone(value):
    assert _fresh(ALLOCATOR, FASTLAYERS_KEEP_FREED_MEMORY=value) is False
