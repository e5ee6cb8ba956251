"""The README's Python examples run as written: the quick start trains and scores held-out data,
and the custom module passes finite differences."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2
    namespace = {}
    exec(compile(blocks[0] + blocks[1], str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    accuracies = [float(v) for v in re.findall(r"held-out accuracy ([0-9.]+)%", printed)]
    assert len(accuracies) == 3 and accuracies[-1] > 90.0
    fl, scale = namespace["fl"], namespace["Scale"](3).double()
    assert fl.gradcheck(scale, np.random.default_rng(0).standard_normal((4, 3)))
