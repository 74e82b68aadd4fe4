"""Smoke test of benchmarks/end_to_end.py: one epoch of one arm, two seeds, written and
summarised."""

import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import end_to_end  # noqa: E402


def test_small_run_writes_rows_summary_and_figure(tmp_path):
    # One problem in graph mode (one trace); tests/test_hvae.py covers the HVAE. The MLP's
    # default resolves to local reparameterization on both layers: the same compiled program
    # as that arm, so it is not trained (nor timed) a second time; its rows are that arm's.
    rows, summary = end_to_end.main(
        ["--small", "--seeds", "2", "--epochs", "1", "--problems", "bnn_mlp"]
        + ["--arms", "default", "local_reparameterization", "--no-jit"]
        + ["--output-dir", str(tmp_path)]
    )
    assert [(r["problem"], r["arm"], r["seed"]) for r in rows] == [
        ("bnn_mlp", "local_reparameterization", 0),
        ("bnn_mlp", "local_reparameterization", 1),
        ("bnn_mlp", "default", 0),
        ("bnn_mlp", "default", 1),
    ]
    for r in rows:
        assert np.isfinite(r["test_log_likelihood"]) and r["test_log_likelihood"] < 0
        assert 0 <= r["test_accuracy"] <= 1 and r["wallclock_seconds"] > 0
        assert r["resolved"] not in ("", "default")  # what the layers' default resolved to
    for a, b in zip(rows[:2], rows[2:]):
        assert b == dict(a, arm="default", same_as="local_reparameterization")
    default = next(s for s in summary if s["arm"] == "default")
    assert default["same_as"] == default["resolved"] == "local_reparameterization"
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


def test_budget_epochs_give_faster_arms_the_slowest_arms_time():
    plan = end_to_end.budget_epochs({"slow": 2.0, "fast": 1.0, "faster": 1.45, "fastest": 0.1}, 10)
    # slow: its own 10 epochs are the budget; fast: 20 epochs reach it, 1.38x as fast: 13.8 -> 14;
    # fastest would need 200, capped at MAX_EXTRA_FACTOR (4) x 10.
    assert plan == {"slow": 10, "fast": 20, "faster": 14, "fastest": 40}


def _rows(arm, seconds_per_step, epochs, metric, seed):
    return [
        dict(
            problem="p",
            arm=arm,
            resolved=arm,
            seed=seed,
            epoch=e,
            steps=e,
            equal_epochs=2,
            test_bound=metric(e) + seed,
            seconds_per_step=seconds_per_step,
            wallclock_seconds=e * seconds_per_step,
        )
        for e in epochs
    ]


def test_summary_reads_every_arm_at_the_slowest_arms_equal_epochs_time():
    rows = []
    for seed in (0, 1):
        rows += _rows("slow", 2.0, [1, 2], lambda e: 10 * e, seed)  # 2 s per step
        rows += _rows("fast", 1.0, [1, 2, 3, 5], lambda e: e, seed)  # evaluated at 1, 2, 3, 5
        rows += _rows("short", 1.0, [1, 2, 3], lambda e: e, seed)  # stopped before the budget
    summary = {s["arm"]: s for s in end_to_end.summarise(rows)}
    # Budget: the slowest arm's 2 equal epochs x 1 step x 2 s = 4 s.
    assert all(s["budget_seconds"] == 4.0 for s in summary.values())
    np.testing.assert_allclose(summary["slow"]["test_bound_final_mean"], 20.5)
    np.testing.assert_allclose(summary["slow"]["test_bound_budget_mean"], 20.5)
    np.testing.assert_allclose(summary["fast"]["test_bound_final_mean"], 2.5)  # epoch 2
    # Read at 4 s: interpolated between the evaluations at 3 s and 5 s.
    np.testing.assert_allclose(summary["fast"]["test_bound_budget_mean"], 4.5)
    np.testing.assert_allclose(summary["fast"]["test_bound_budget_se"], 0.5)
    assert summary["fast"]["budget_reached"] and summary["slow"]["budget_reached"]
    # An arm whose clock stopped short is read at its last evaluation, and flagged.
    np.testing.assert_allclose(summary["short"]["test_bound_budget_mean"], 3.5)
    assert not summary["short"]["budget_reached"]
