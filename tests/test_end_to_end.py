"""Smoke test of benchmarks/end_to_end.py: one epoch of two arms, two seeds, written and summarised."""

import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import end_to_end  # noqa: E402


def test_small_run_writes_rows_summary_and_figure(tmp_path):
    rows, summary = end_to_end.main(
        ["--small", "--seeds", "2", "--epochs", "1", "--problems", "bnn_mlp", "hvae"]
        + ["--arms", "default", "r2g2", "--no-jit", "--output-dir", str(tmp_path)]
    )
    assert {(r["problem"], r["arm"]) for r in rows} == {
        ("bnn_mlp", "default"),
        ("bnn_mlp", "r2g2"),
        ("hvae", "r2g2"),
    }
    assert len(rows) == 3 * 2  # one evaluation per run and seed
    for r in rows:
        metric = r.get("test_log_likelihood", r.get("test_bound"))
        assert np.isfinite(metric) and metric < 0 and r["wallclock_seconds"] > 0
    default = next(r for r in rows if r["arm"] == "default")
    assert default["resolved"] not in ("", "default")  # what the layers' default resolved to
    assert all(
        np.isfinite(
            s["test_bound_final_se" if s["problem"] == "hvae" else "test_log_likelihood_final_se"]
        )
        for s in summary
    )
    with open(tmp_path / "end_to_end_small.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert (tmp_path / "end_to_end_small_summary.csv").exists()
    assert (tmp_path / "end_to_end_small.png").exists()
