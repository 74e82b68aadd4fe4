"""Smoke test of benchmarks/end_to_end.py: one epoch of one arm, two seeds, written and
summarised."""

import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import end_to_end  # noqa: E402


def test_small_run_writes_rows_summary_and_figure(tmp_path):
    # One arm of one problem in graph mode (one trace); tests/test_hvae.py covers the HVAE.
    rows, summary = end_to_end.main(
        ["--small", "--seeds", "2", "--epochs", "1", "--problems", "bnn_mlp", "--arms", "default"]
        + ["--no-jit", "--output-dir", str(tmp_path)]
    )
    assert [(r["problem"], r["arm"], r["seed"]) for r in rows] == [
        ("bnn_mlp", "default", 0),
        ("bnn_mlp", "default", 1),
    ]
    for r in rows:
        assert np.isfinite(r["test_log_likelihood"]) and r["test_log_likelihood"] < 0
        assert 0 <= r["test_accuracy"] <= 1 and r["wallclock_seconds"] > 0
        assert r["resolved"] not in ("", "default")  # what the layers' default resolved to
    assert np.isfinite(summary[0]["test_log_likelihood_final_se"])
    with open(tmp_path / "end_to_end_small.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert (tmp_path / "end_to_end_small_summary.csv").exists()
    assert (tmp_path / "end_to_end_small.png").exists()
    # The CSV alone reproduces the summary (the README's tables come from it).
    _, again = end_to_end.main(
        [
            "--small",
            "--from-csv",
            str(tmp_path / "end_to_end_small.csv"),
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert again == summary
