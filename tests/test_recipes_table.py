"""asv_bench/recipes_table.py's table row from run reports: medians, ranges, per-run ratios and
the count of seeds that reached the target, on hand-written reports."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "asv_bench"))
import recipes_table  # noqa: E402


def _report(ours, theirs, accuracy, epochs):
    def result(ttt, n):
        return {"time_to_target_s": ttt, "final_test_accuracy": accuracy,
                "epochs": [{}] * n}
    return {"results": {"fastlayers": result(ours, epochs), "pytorch": result(theirs, epochs + 1)}}


def test_row_gives_medians_ranges_and_reached_counts():
    reports = [_report(10.0, 40.0, 0.905, 3), _report(12.0, 20.0, 0.91, 3),
               _report(None, 30.0, 0.899, 4)]
    row = recipes_table.row("fashion-90", reports).split(" | ")
    assert row[1] == "90.0%"
    assert row[2] == "11.0 s (10.0-12.0 s)"        # the seed that missed the target is left out
    assert row[3] == "30.0 s (20.0-40.0 s)"
    assert row[4] == "0.42x (0.25-0.60x)"           # per-run ratios 0.25 and 0.6
    assert row[5] == "90.50% (89.90%-91.00%)"
    assert row[6] == "3 (3-4) of 4"
    assert row[7] == "2/3 (3/3) |"


def test_spread_of_one_value_and_of_none():
    assert recipes_table._spread([2.0], lambda v: f"{v:.1f}") == "2.0"
    assert recipes_table._spread([None], str) == "-"
