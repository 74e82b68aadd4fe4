"""`python -m tfp_gradest compare` and the built-in problems it runs on."""

import json
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import tensorflow as tf

import tfp_gradest as tge
from tfp_gradest import cli


@pytest.mark.parametrize("name", ["toy_gaussian", "logistic_regression", "bnn_digits"])
def test_compare_writes_the_table_csv_json_and_png(name, tmp_path, capsys):
    out = tmp_path / "out"
    reports = cli.main(
        ["compare", "--problem", name, "--estimators", "iwae,iwae_dreg", "-K", "4",
         "--sample-size", "2", "--draws", "20", "--output-dir", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "iwae_dreg" in printed and f"problem={name}" in printed
    assert [r.estimator for r in reports] == ["iwae", "iwae_dreg"]
    for file in ("compare.csv", "compare.json", "compare.png"):
        assert (out / file).stat().st_size > 0, file
    results = json.loads((out / "compare.json").read_text())["results"]
    assert results[1]["estimator"] == "iwae_dreg" and results[1]["mean_variance"] > 0
    assert (out / "compare.csv").read_text().splitlines()[0].startswith("estimator,mean_variance")


def test_the_toy_gaussian_shows_dreg_beating_iwae(tmp_path):
    reports = cli.main(
        ["compare", "--problem", "toy_gaussian", "--estimators", "iwae,iwae_dreg", "-K", "16",
         "--draws", "200", "--output-dir", str(tmp_path), "--no-plot"]
    )  # fmt: skip
    assert reports[0].mean_variance > 10 * reports[1].mean_variance
    assert not (tmp_path / "compare.png").exists()


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--problem", "nope"], "Valid problems: bnn_digits, gaussian"),
        (["--estimators", "stl,magic"], "magic"),
        (["--estimators", "stl", "-K", "4"], "iwae"),
        (["--sample-size", "0"], "sample_size"),
        (["--draws", "1"], "draws"),
    ],
)
def test_bad_arguments_give_a_message_not_a_traceback(argv, match, tmp_path):
    with pytest.raises(SystemExit, match=match):
        cli.main(["compare", *argv, "--output-dir", str(tmp_path)])


def test_console_script_and_module_entry_point():
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts.get("tfp-gradest") == "tfp_gradest.cli:main"
    result = subprocess.run(
        [sys.executable, "-m", "tfp_gradest", "compare", "--problem", "nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "Valid problems" in result.stderr + result.stdout


@pytest.mark.parametrize("name", ["logistic_regression", "bnn_digits"])
def test_problems_take_leading_sample_axes_in_both_dtypes(name, dtype):
    problem = tge.problems.get(name, dtype=dtype)
    z = problem.surrogate.sample([3, 2], seed=[1, 2])
    log_prob = problem.target_log_prob(z)
    assert log_prob.shape == [3, 2] and log_prob.dtype == dtype
    # Each sample is evaluated on its own: the batched value equals the one-at-a-time value.
    np.testing.assert_allclose(
        log_prob[1, 0],
        problem.target_log_prob(z[1, 0]),
        rtol=1e-4 if dtype == tf.float32 else 1e-10,
    )
