"""The run's files: their name, the `--output-dir` check before the run, CSV/JSON/PNG after it."""

import csv
import json
import os
import re
import tempfile

import tfp_gradest
from tfp_gradest.cli._arguments import DEFAULT_PROBLEM, FIT_STEPS, split_estimators

__all__ = ["COLUMNS", "check_output_dir", "run_name", "write"]

COLUMNS = (
    "estimator",
    "mean_variance",
    "mean_snr",
    "max_abs_bias_z",
    "step_seconds",
    "work_normalized_variance",
    "step_seconds_low",
    "step_seconds_high",
    "variance_reduction",
    "work_normalized_reduction",
    "biased",
    "bias_threshold",
    "problem",
    "sample_size",
    "importance_sample_size",
    "at",
    "noise",
)


def run_name(args):
    """The run's file name: `showcase`, or the problem, estimators and non-default options."""
    problem = args.problem
    noise = getattr(args, "noise", "iid")
    single = (args.estimators, args.sample_size, args.importance_sample_size, args.at, noise)
    if problem is None and single == (None, None, None, "init", "iid"):
        parts = ["showcase"]
    else:
        parts = [problem or DEFAULT_PROBLEM]
        if args.estimators is not None:
            names = split_estimators(args.estimators)  # options as `name_key=value`
            unquoted = (re.sub(r"['\"\s]", "", n) for n in names)
            parts.append("+".join(re.sub(r"[^\w.=+-]+", "_", n).strip("_") for n in unquoted))
    options = [
        ("S", args.sample_size, None),  # None: the problem's own size
        ("K", args.importance_sample_size, None),
        ("", args.at, "init"),
        ("fit", args.fit_steps, FIT_STEPS) if args.at == "fitted" else ("", None, None),
        ("draws", args.draws, None),
        ("ref", args.reference_draws, None),
        ("repeats", args.repeats, 5),
        ("seed", args.seed, 0),
        ("", getattr(args, "backend", None) or "tensorflow", "tensorflow"),
        ("", noise, "iid"),
    ]
    parts += [f"{tag}{value}" for tag, value, default in options if value != default]
    return "-".join(parts)


def check_output_dir(path):
    """Creates `path` and writes and removes a file there, so a bad `--output-dir` is an
    `error:` line before the run rather than a traceback after it."""
    if not path:
        raise ValueError("--output-dir is empty. Received: ''. Give a folder, e.g. '.'")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"--output-dir is a file, not a folder. Received: {path!r}. Give a folder's path."
        )
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"--output-dir cannot be written ({error.strerror or error}). Received: {path!r}. "
            "Give a folder you can write to."
        ) from None


def write(results, args):
    """Writes `<run_name(args)>.csv`, `.json` and (without `--no-plot`) `.png` to `--output-dir`."""
    os.makedirs(args.output_dir, exist_ok=True)
    name = run_name(args)
    rows = []
    for result in results:
        case, base = result.case, result.reports[0]
        for r in result.reports:
            rows.append(
                {
                    **r.as_dict(),
                    "variance_reduction": base.mean_variance / r.mean_variance,
                    "work_normalized_reduction": base.work_normalized_variance
                    / r.work_normalized_variance,
                    "biased": result.reports.biased(r),
                    "bias_threshold": result.reports.bias_threshold,
                    "problem": case.problem,
                    "sample_size": case.sample_size,
                    "importance_sample_size": case.importance_sample_size,
                    "at": case.at,
                    "noise": case.noise,
                }
            )
    paths = {ext: os.path.join(args.output_dir, f"{name}.{ext}") for ext in ("csv", "json", "png")}
    if args.no_plot:
        del paths["png"]
    replaced = [p for p in paths.values() if os.path.exists(p)]
    with open(paths["json"], "w") as f:
        json.dump(
            {
                "version": tfp_gradest.__version__,
                "arguments": vars(args),
                "cases": [
                    {
                        **r.case._asdict(),
                        "estimators": [report.estimator for report in r.reports],  # labels
                        "location": r.location,
                        "reference": r.reference,
                    }
                    for r in results
                ],
                "results": rows,
            },
            f,
            indent=2,
        )
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if "png" in paths:
        from tfp_gradest.diagnostics.plotting import plot_reductions

        plot_reductions([(r.case.problem, r.reports) for r in results], paths["png"])
    print(f"\nwrote {', '.join(paths.values())}")
    if replaced:
        print(f"(replacing the files of an earlier run with the same options: {len(replaced)})")
