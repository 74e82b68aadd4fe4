"""`python -m tfp_gradest compare`: estimators side by side on a built-in problem."""

import argparse
import csv
import json
import os
import sys

from tfp_gradest import estimators, problems
from tfp_gradest.diagnostics import compare_estimators

DEFAULT_PROBLEM = "gaussian"
DEFAULT_ESTIMATORS = ("reparameterization", "stl", "score_function")
COLUMNS = (
    "estimator",
    "mean_variance",
    "mean_snr",
    "max_abs_bias_z",
    "step_seconds",
    "work_normalized_variance",
)


def _parser():
    parser = argparse.ArgumentParser(prog="python -m tfp_gradest", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    compare = commands.add_parser("compare", help="compare gradient estimators on a problem")
    compare.add_argument(
        "--problem", default=DEFAULT_PROBLEM, help=f"one of: {', '.join(problems.names())}"
    )
    compare.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        help=f"comma-separated, from: {', '.join(estimators.names())}",
    )
    compare.add_argument("--sample-size", type=int, default=4, help="S, objectives averaged")
    compare.add_argument(
        "-K",
        "--importance-sample-size",
        type=int,
        default=1,
        help="K, samples per objective (multi-sample estimators: iwae, iwae_dreg, ...)",
    )
    compare.add_argument("--draws", type=int, default=1000, help="gradient draws per estimator")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument(
        "--output-dir", default="compare_output", help="where the CSV, JSON and PNG go"
    )
    compare.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    return parser


def _progress(index, total, name):
    width = 24
    done = int(width * index / total)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {index}/{total} {name:<28}")
    sys.stderr.flush()


def format_table(reports):
    header = f"{'estimator':<22} {'variance':>11} {'SNR':>8} {'max|bias z|':>11} {'step ms':>8} {'var x time':>11}"
    lines = [header, "-" * len(header)]
    for r in reports:
        lines.append(
            f"{r.estimator:<22} {r.mean_variance:>11.4g} {r.mean_snr:>8.3f} {r.max_abs_bias_z:>11.2f} "
            f"{1e3 * r.step_seconds:>8.3f} {r.work_normalized_variance:>11.4g}"
        )
    return "\n".join(lines)


def compare(args):
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    try:
        problem = problems.get(args.problem)
        for name in names:  # every name and size checked before anything runs
            estimators.get(name).validate(
                problem.surrogate,
                args.sample_size,
                args.importance_sample_size,
                target_log_prob_fn=problem.target_log_prob,
            )
        if args.draws < 2:
            raise ValueError(f"--draws must be at least 2. Received: {args.draws}")
        if not names:
            raise ValueError("--estimators is empty.")
        reports = compare_estimators(
            problem,
            names,
            sample_size=args.sample_size,
            importance_sample_size=args.importance_sample_size,
            num_draws=args.draws,
            seed=args.seed,
            progress=_progress,
        )
    except ValueError as error:  # bad names or sizes: a message, not a traceback
        raise SystemExit(f"error: {error}") from None
    _progress(len(names), len(names), "done")
    sys.stderr.write("\n")
    print(
        f"problem={args.problem} S={args.sample_size} K={args.importance_sample_size} "
        f"draws={args.draws} seed={args.seed}"
    )
    print(format_table(reports))
    os.makedirs(args.output_dir, exist_ok=True)
    rows = [r.as_dict() for r in reports]
    with open(os.path.join(args.output_dir, "compare.json"), "w") as f:
        json.dump({"problem": args.problem, "arguments": vars(args), "results": rows}, f, indent=2)
    with open(os.path.join(args.output_dir, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    written = ["compare.csv", "compare.json"]
    if not args.no_plot:
        from tfp_gradest.diagnostics.plotting import plot_comparison

        plot_comparison(
            reports,
            os.path.join(args.output_dir, "compare.png"),
            title=f"{args.problem}, S={args.sample_size}, K={args.importance_sample_size}",
        )
        written.append("compare.png")
    print(f"wrote {', '.join(os.path.join(args.output_dir, w) for w in written)}")
    return reports


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    if args.command is None:  # no arguments: the default comparison
        args = _parser().parse_args(["compare"])
    return compare(args)
