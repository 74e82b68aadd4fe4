"""`python -m tfp_gradest compare`: gradient estimators side by side on built-in problems.

With no `--problem`, it runs the showcase: the cases below, each against the
plain reparameterisation gradient of its objective (the first estimator):

* `toy_gaussian`, K = 64 (Tucker et al. 2019, §6.1): IWAE vs IWAE-STL vs IWAE-DReG;
* `linear_regression` after fitting (a conjugate model; the exact posterior is
  in the surrogate family): reparameterization vs STL near the optimum;
* `bnn_layers` (a Bayesian MLP of `tge.layers`): reparameterization vs the local
  reparameterisation trick vs R2-G2.

Arguments are parsed and checked before TensorFlow is imported, so `--help` and
mistakes answer at once; TensorFlow's native logs are kept off the terminal
unless `--verbose`.
"""

import argparse
import contextlib
import csv
import json
import math
import os
import statistics
import sys
import tempfile
from typing import NamedTuple

from tfp_gradest import problems

__all__ = ["Case", "CaseResult", "compare", "main"]


class Case(NamedTuple):
    """One comparison: a problem, the estimators (the first is the baseline), sizes, where."""

    problem: str
    estimators: tuple
    sample_size: int = 1
    importance_sample_size: int = 1
    at: str = "init"  # "init" or "fitted"
    draws: int = 1000


SHOWCASE = (
    Case("toy_gaussian", ("iwae", "iwae_stl", "iwae_dreg"), 1, 64, "init", 500),
    Case("linear_regression", ("reparameterization", "stl"), 1, 1, "fitted", 500),
    Case(
        "bnn_layers",
        ("reparameterization", "local_reparameterization", "r2g2"),
        1,
        1,
        "init",
        200,
    ),
)
FIT_STEPS = 300
DEFAULT_DRAWS = 1000
DEFAULT_PROBLEM = "gaussian"  # with --estimators, -S, -K or --at but no --problem
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
    "problem",
    "sample_size",
    "importance_sample_size",
    "at",
)


class CaseResult(NamedTuple):
    case: Case
    location: str  # where the gradients were drawn
    reference: str  # what the bias column is measured against
    reports: list  # tge.diagnostics.EstimatorReport, one per estimator


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m tfp_gradest",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command")
    compare_parser = commands.add_parser(
        "compare",
        help="compare gradient estimators (no --problem: the showcase)",
        description=__doc__,
        formatter_class=_HelpFormatter,
    )
    compare_parser.add_argument(
        "--problem",
        default=None,
        help=f"one of: {', '.join(problems.names())}; none: the showcase (three cases), or "
        f"{DEFAULT_PROBLEM!r} when --estimators, -S, -K or --at is given",
    )
    compare_parser.add_argument(
        "--estimators",
        default=None,
        help="comma-separated estimator names, the first one the baseline; default: the "
        "problem's own set (`python -m tfp_gradest list` prints the names)",
    )
    compare_parser.add_argument(
        "-S", "--sample-size", type=int, default=1, help="objectives averaged"
    )
    compare_parser.add_argument(
        "-K",
        "--importance-sample-size",
        type=int,
        default=1,
        help="samples per objective (multi-sample estimators: iwae, iwae_dreg, ...)",
    )
    compare_parser.add_argument(
        "--draws",
        type=int,
        default=None,
        help=f"gradient draws per estimator; default: {DEFAULT_DRAWS}, or the showcase's own "
        f"({', '.join(str(c.draws) for c in SHOWCASE)})",
    )
    compare_parser.add_argument(
        "--at",
        choices=("init", "fitted"),
        default="init",
        help="draw the gradients at the problem's initialisation, or after --fit-steps "
        "Adam steps on the ELBO",
    )
    compare_parser.add_argument(
        "--fit-steps", type=int, default=FIT_STEPS, help="steps of fitting for --at fitted"
    )
    compare_parser.add_argument(
        "--reference-draws",
        type=int,
        default=None,
        help="draws of the Monte Carlo reference gradient where no closed form is known "
        "(0: no bias column); default: 10 x --draws",
    )
    compare_parser.add_argument(
        "--repeats", type=int, default=5, help="rounds of alternated step timing"
    )
    compare_parser.add_argument("--seed", type=int, default=0)
    compare_parser.add_argument(
        "--output-dir", default="compare_output", help="where the CSV, JSON and PNG go"
    )
    compare_parser.add_argument(
        "--no-plot", action="store_true", help="skip the PNG (no matplotlib)"
    )
    compare_parser.add_argument(
        "-v", "--verbose", action="store_true", help="show TensorFlow's own log messages"
    )
    list_parser = commands.add_parser("list", help="list the problems and estimators")
    list_parser.add_argument("-v", "--verbose", action="store_true")
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (those that depend on others say so in their help),
    and the description's lists as written."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


# --- arguments, checked before TensorFlow is imported ------------------------------------


def _cases(args):
    """The `Case`s `args` ask for; raises `ValueError` for anything checkable without TensorFlow."""
    for flag in ("sample_size", "importance_sample_size", "fit_steps", "repeats"):
        if getattr(args, flag) < 1:
            raise ValueError(
                f"--{flag.replace('_', '-')} must be at least 1. Received: {getattr(args, flag)}"
            )
    if args.draws is not None and args.draws < 2:
        raise ValueError(
            f"--draws must be at least 2 (a variance needs two). Received: {args.draws}"
        )
    if args.reference_draws is not None and args.reference_draws < 0:
        raise ValueError(f"--reference-draws must be 0 or more. Received: {args.reference_draws}")
    estimators = None
    if args.estimators is not None:
        estimators = tuple(n.strip() for n in args.estimators.split(",") if n.strip())
        if not estimators:
            raise ValueError(f"--estimators is empty. Received: {args.estimators!r}")
    problem = args.problem
    if problem is None:
        single = (estimators, args.sample_size, args.importance_sample_size, args.at)
        if single == (None, 1, 1, "init"):
            return [c._replace(draws=args.draws or c.draws) for c in SHOWCASE]
        # --estimators, -S, -K or --at ask for one comparison: on the default problem.
        problem = DEFAULT_PROBLEM
        sys.stderr.write(f"no --problem given: comparing on {DEFAULT_PROBLEM!r}\n")
    problems.check_name(problem)
    return [
        Case(
            problem,
            estimators,  # None: the problem's default_estimators, once it is built
            args.sample_size,
            args.importance_sample_size,
            args.at,
            args.draws or DEFAULT_DRAWS,
        )
    ]


# --- quiet TensorFlow ----------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_tensorflow(verbose):
    """Keeps TensorFlow's native (C++) log lines off the terminal unless `verbose`.

    `TF_CPP_MIN_LOG_LEVEL` is set before TensorFlow is imported, but lines written
    before absl's logging starts (oneDNN, CUDA stubs, `cuInit` on a machine without
    a GPU) ignore it; so file descriptor 2 goes to a temporary file while Python's
    own `sys.stderr` (progress, warnings, errors) stays on the terminal. If anything
    fails, the captured lines are printed after all.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1)
        failed = False
        try:
            _quiet_python_loggers()
            yield
        except BaseException as error:
            failed = not (isinstance(error, SystemExit) and error.code in (0, None))
            raise
        finally:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(terminal, 2)
            os.close(terminal)
            if failed:
                log.seek(0)
                captured = log.read().decode(errors="replace")
                if captured.strip():
                    python_stderr.write("TensorFlow's log (hidden unless --verbose):\n" + captured)


def _quiet_python_loggers():
    import logging

    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- running ---------------------------------------------------------------------------------


def _progress(index, total, name):
    width = 24
    done = int(width * index / total)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {index}/{total} {name:<28}")
    sys.stderr.flush()


def _prepare(case):
    """Builds the case's problem and checks every estimator and size before anything runs."""
    problem = problems.get(case.problem)
    case = case._replace(estimators=case.estimators or tuple(problem.default_estimators))
    for name in case.estimators:
        problem.validate_estimator(name, case.sample_size, case.importance_sample_size)
    return case, problem


def _run_case(case, problem, args):
    from tfp_gradest import diagnostics

    if case.at == "fitted":
        problem.fit(args.fit_steps, seed=args.seed)
        location = (
            f"after fitting: {args.fit_steps} Adam steps (lr {problem.fit_learning_rate}, "
            f"{problem.fit_estimator} gradients)"
        )
    else:
        location = "at the problem's initialisation"
    distance = problem.distance_to_optimum()
    location += (
        f"; {distance}" if distance else "; distance to the optimum unknown (no closed form)"
    )
    sys.stderr.write(f"{case.problem}:\n")
    reports = diagnostics.compare_estimators(
        problem,
        list(case.estimators),
        sample_size=case.sample_size,
        importance_sample_size=case.importance_sample_size,
        num_draws=case.draws,
        seed=args.seed,
        progress=_progress,
        reference="auto",
        timing_repeats=args.repeats,
        reference_draws=args.reference_draws,
    )
    if reports.reference is not None:
        size = sum(math.prod(v.shape) for v in problem.variables_for(case.estimators[0]))
        described = (
            f"{reports.reference.description}; with no bias and normal z-scores, max|z| over "
            f"these {size} elements stays below {_max_abs_normal_quantile(size, 0.99):.1f} in "
            f"99% of runs (heavy-tailed gradients need more --draws for that)"
        )
    elif args.reference_draws == 0:
        described = "n/a (--reference-draws 0)"
    else:
        described = (
            f"n/a (no closed form and no reference estimator at K={case.importance_sample_size})"
        )
    _progress(len(case.estimators), len(case.estimators), "done")
    sys.stderr.write("\n")
    return CaseResult(case, location, described, reports)


def _max_abs_normal_quantile(size, probability):
    """`m` with `P(max of size |N(0, 1)| < m) = probability` (independent elements)."""
    tail = (1.0 - probability ** (1.0 / size)) / 2.0
    return statistics.NormalDist().inv_cdf(1.0 - tail)


def format_table(reports):
    """The table of one case; the reductions are relative to the first (baseline) row."""
    header = (
        f"{'estimator':<25} {'variance':>10} {'var cut':>8} {'SNR':>7} {'max|bias z|':>11} "
        f"{'us/grad [q25, q75]':>22} {'var x time':>10} {'cut':>7}"
    )
    lines = [header, "-" * len(header)]
    base = reports[0]
    for r in reports:
        bias = "n/a" if r.max_abs_bias_z != r.max_abs_bias_z else f"{r.max_abs_bias_z:.2f}"
        timing = (
            f"{1e6 * r.step_seconds:.3g} [{1e6 * r.step_seconds_low:.3g}, "
            f"{1e6 * r.step_seconds_high:.3g}]"
        )
        lines.append(
            f"{r.estimator:<25} {r.mean_variance:>10.3g} "
            f"{_cut(base.mean_variance, r.mean_variance):>8} "
            f"{r.mean_snr:>7.3f} {bias:>11} {timing:>22} {r.work_normalized_variance:>10.3g} "
            f"{_cut(base.work_normalized_variance, r.work_normalized_variance):>7}"
        )
    return "\n".join(lines)


def _cut(base, value):
    ratio = base / value if value > 0 else float("inf")
    return f"{ratio:.3g}x"


def _print_case(result):
    case = result.case
    print(
        f"\n== {case.problem}: S={case.sample_size}, K={case.importance_sample_size}, "
        f"{case.draws} draws per estimator, baseline {case.estimators[0]} =="
    )
    print(f"gradients drawn {result.location}")
    print(f"bias z measured against: {result.reference}")
    print(format_table(result.reports))


def compare(argv=None):
    """Parses `argv` (`compare ...`), runs the comparison, prints and writes it.

    Returns:
      A list of `CaseResult`. Raises `SystemExit` with a message for bad arguments.
    """
    args = _parser().parse_args(["compare"] if not argv else argv)
    if args.command == "list":
        with _quiet_tensorflow(args.verbose):
            _list()
        return []
    try:
        cases = _cases(args)
    except ValueError as error:  # bad names or sizes: a message, not a traceback
        raise SystemExit(f"error: {error}") from None
    with _quiet_tensorflow(args.verbose):
        try:
            prepared = [_prepare(case) for case in cases]
        except (ValueError, TypeError) as error:  # an estimator that does not apply here
            raise SystemExit(f"error: {error}") from None
        results = [_run_case(case, problem, args) for case, problem in prepared]
    print(
        f"seed={args.seed}; step time: median over {args.repeats} alternated repeats "
        f"of the compiled draw loop, per gradient (quartiles in brackets)"
    )
    for result in results:
        _print_case(result)
    _write(results, args)
    return results


def _list():
    from tfp_gradest import estimators, layers

    print("problems: " + ", ".join(problems.names()))
    print("estimators (surrogate problems): " + ", ".join(estimators.names()))
    print("estimators (bnn_layers, the layers' own): " + ", ".join(layers.GRADIENT_ESTIMATORS))


def _write(results, args):
    os.makedirs(args.output_dir, exist_ok=True)
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
                    "problem": case.problem,
                    "sample_size": case.sample_size,
                    "importance_sample_size": case.importance_sample_size,
                    "at": case.at,
                }
            )
    with open(os.path.join(args.output_dir, "compare.json"), "w") as f:
        json.dump(
            {
                "arguments": vars(args),
                "cases": [
                    {**r.case._asdict(), "location": r.location, "reference": r.reference}
                    for r in results
                ],
                "results": rows,
            },
            f,
            indent=2,
        )
    with open(os.path.join(args.output_dir, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    written = ["compare.csv", "compare.json"]
    if not args.no_plot:
        from tfp_gradest.diagnostics.plotting import plot_reductions

        plot_reductions(
            [(r.case.problem, r.reports) for r in results],
            os.path.join(args.output_dir, "compare.png"),
        )
        written.append("compare.png")
    print(f"\nwrote {', '.join(os.path.join(args.output_dir, w) for w in written)}")


def main(argv=None):
    """The console script: runs `compare` and returns the exit status (0 on success)."""
    compare(sys.argv[1:] if argv is None else argv)
    return 0
