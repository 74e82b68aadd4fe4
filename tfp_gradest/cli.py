"""`python -m tfp_gradest compare`: gradient estimators side by side on built-in problems.

With no `--problem`, it runs the showcase: the cases below, each against the
plain reparameterisation gradient of its objective (the first estimator):

* `toy_gaussian`, K = 64 (Tucker et al. 2019, §6.1): IWAE vs IWAE-STL vs IWAE-DReG;
* `linear_regression` after fitting (a conjugate model; the exact posterior is
  in the surrogate family): reparameterization vs STL near the optimum;
* `bnn_layers` (a Bayesian MLP of `tge.layers`): reparameterization vs the local
  reparameterisation trick vs R2-G2.

Each run writes `<name>.csv`, `<name>.json` and `<name>.png` into `--output-dir`,
`<name>` naming the run: `showcase` for the default job, otherwise the problem,
the estimators and every option that differs from its default (for example
`toy_gaussian-iwae+iwae_dreg-K16`). So a run never overwrites another run's
files; running the same command again replaces its own, and says so.

Arguments and `--output-dir` are checked before TensorFlow is imported, so
`--help` and mistakes answer at once with one `error:` line (exit status 2);
TensorFlow's native logs are kept off the terminal unless `--verbose`; Ctrl-C
stops with one line (exit status 130).
"""

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import tempfile
from typing import NamedTuple

import tfp_gradest
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
    "biased",
    "bias_threshold",
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


PROG = "tfp-gradest"  # the console script; `python -m tfp_gradest` passes its own


def _parser(prog=PROG):
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {tfp_gradest.__version__}"
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
        f"problem's own set (`{prog} list` prints the names)",
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
        "--output-dir",
        default="compare_output",
        help="folder of the run's <name>.csv, .json and .png (created; checked before the run)",
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


def run_name(args):
    """The run's file name: `showcase`, or the problem, estimators and non-default options."""
    problem = args.problem
    single = (args.estimators, args.sample_size, args.importance_sample_size, args.at)
    if problem is None and single == (None, 1, 1, "init"):
        parts = ["showcase"]
    else:
        parts = [problem or DEFAULT_PROBLEM]
        if args.estimators is not None:
            parts.append("+".join(n.strip() for n in args.estimators.split(",") if n.strip()))
    options = [
        ("S", args.sample_size, 1),
        ("K", args.importance_sample_size, 1),
        ("", args.at, "init"),
        ("fit", args.fit_steps, FIT_STEPS) if args.at == "fitted" else ("", None, None),
        ("draws", args.draws, None),
        ("ref", args.reference_draws, None),
        ("repeats", args.repeats, 5),
        ("seed", args.seed, 0),
    ]
    parts += [f"{tag}{value}" for tag, value, default in options if value != default]
    return "-".join(parts)


def _check_output_dir(path):
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


# --- quiet TensorFlow ----------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_tensorflow(verbose):
    """Keeps TensorFlow's native (C++) log lines off the terminal unless `verbose`.

    `TF_CPP_MIN_LOG_LEVEL` is set before TensorFlow is imported, but lines written
    before absl's logging starts (oneDNN, CUDA stubs, `cuInit` on a machine without
    a GPU) ignore it; so file descriptor 2 goes to a temporary file while Python's
    own `sys.stderr` (progress, warnings, errors) stays on the terminal. If the run
    crashes (anything but an `error:` exit or Ctrl-C, which say all there is to
    say in one line), the captured lines are printed after all.
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
        crashed = False
        try:
            _quiet_python_loggers()
            yield
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            crashed = True
            raise
        finally:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(terminal, 2)
            os.close(terminal)
            if crashed:
                log.seek(0)
                captured = log.read().decode(errors="replace")
                if captured.strip():
                    python_stderr.write("TensorFlow's log (hidden unless --verbose):\n" + captured)


def _quiet_python_loggers():
    import logging

    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- running ---------------------------------------------------------------------------------

_progress_line_open = False  # a progress bar without its newline is on the terminal


def _progress(index, total, name):
    global _progress_line_open
    width = 24
    done = int(width * index / total)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {index}/{total} {name:<28}")
    sys.stderr.flush()
    _progress_line_open = True


def _end_progress_line():
    global _progress_line_open
    if _progress_line_open:
        sys.stderr.write("\n")
        _progress_line_open = False


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
        described = (
            f"{reports.reference.description}; an unbiased estimator's max|z| over these "
            f"{reports.num_elements:,} elements stays below {reports.bias_threshold:.1f} in "
            f"99.9% of runs if its z-scores are normal (heavy-tailed gradients: more --draws); "
            f"above it: marked 'biased'"
        )
    elif args.reference_draws == 0:
        described = "n/a (--reference-draws 0)"
    else:
        described = (
            f"n/a (no closed form and no reference estimator at K={case.importance_sample_size})"
        )
    _progress(len(case.estimators), len(case.estimators), "done")
    _end_progress_line()
    return CaseResult(case, location, described, reports)


def format_ratio(ratio, times="×"):
    """`8770.3` -> `'8,770×'`, `16.04` -> `'16.0×'`, `1.034` -> `'1.03×'`."""
    return f"{_three_digits(ratio)}{times}"


def _three_digits(value):
    """Three significant digits without an exponent: `10565.8` -> `'10,600'`, `0.0203`."""
    if not math.isfinite(value) or value == 0:
        return f"{value:.3g}"
    value = float(f"{value:.3g}")
    return f"{value:,.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def _times_sign():
    """`×`, or `x` where standard output cannot encode it (an ASCII-only terminal)."""
    try:
        "×".encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (LookupError, UnicodeEncodeError):
        return "x"
    return "×"


def format_table(reports):
    """The table of one case, columns aligned; the cuts are relative to the first (baseline)
    row; a row whose bias z-score is above `reports.bias_threshold` is marked `biased`."""
    times = _times_sign()
    threshold = getattr(reports, "bias_threshold", float("nan"))
    header = (
        "estimator",
        "variance",
        "var cut",
        "SNR",
        "max|bias z|",
        "us/grad [q25, q75]",
        "var x time",
        "cut",
    )
    base = reports[0]
    rows = []
    for r in reports:
        if r.max_abs_bias_z != r.max_abs_bias_z:
            bias = "n/a"
        else:
            bias = f"{r.max_abs_bias_z:.2f}"
            if r.max_abs_bias_z > threshold:
                bias += " biased"
        rows.append(
            (
                r.estimator,
                f"{r.mean_variance:.3g}",
                format_ratio(_ratio(base.mean_variance, r.mean_variance), times),
                _three_digits(r.mean_snr),
                bias,
                f"{_three_digits(1e6 * r.step_seconds)} [{_three_digits(1e6 * r.step_seconds_low)}"
                f", {_three_digits(1e6 * r.step_seconds_high)}]",
                f"{r.work_normalized_variance:.3g}",
                format_ratio(
                    _ratio(base.work_normalized_variance, r.work_normalized_variance), times
                ),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    lines = [line(header), "-" * len(line(header)), *(line(row) for row in rows)]
    if any(r.max_abs_bias_z > threshold for r in reports):
        lines.append(
            f"biased: max|bias z| above {threshold:.1f}; its mean gradient is not the "
            "objective's, so its variance cut is not a like-for-like win"
        )
    return "\n".join(lines)


def _ratio(base, value):
    return base / value if value > 0 else float("inf")


def _print_case(result):
    case = result.case
    print(
        f"\n== {case.problem}: S={case.sample_size}, K={case.importance_sample_size}, "
        f"{case.draws} draws per estimator, baseline {case.estimators[0]} =="
    )
    print(f"gradients drawn {result.location}")
    print(f"bias z measured against: {result.reference}")
    print(format_table(result.reports))


def compare(argv=None, prog=PROG):
    """Parses `argv` (`compare ...`), runs the comparison, prints and writes it.

    Returns:
      A list of `CaseResult`. Raises `SystemExit("error: ...")` for bad arguments or
      an `--output-dir` that cannot be written, before any work.
    """
    args = _parser(prog).parse_args(["compare"] if not argv else argv)
    if args.command == "list":
        with _quiet_tensorflow(args.verbose):
            _list()
        return []
    try:
        cases = _cases(args)
        _check_output_dir(args.output_dir)
    except ValueError as error:  # bad names, sizes or folder: a message, not a traceback
        raise SystemExit(f"error: {error}") from None
    try:
        with _quiet_tensorflow(args.verbose):
            try:
                prepared = [_prepare(case) for case in cases]
            except (ValueError, TypeError) as error:  # an estimator that does not apply here
                raise SystemExit(f"error: {error}") from None
            results = [_run_case(case, problem, args) for case, problem in prepared]
    finally:
        _end_progress_line()
    print(
        f"seed={args.seed}; step time: median over {args.repeats} alternated repeats "
        f"of the compiled draw loop, per gradient (quartiles in brackets)"
    )
    for result in results:
        _print_case(result)
    try:
        _write(results, args)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"while writing to {args.output_dir}") from None
    return results


def _list():
    from tfp_gradest import estimators, layers

    print("problems: " + ", ".join(problems.names()))
    print("estimators (surrogate problems): " + ", ".join(estimators.names()))
    print("estimators (bnn_layers, the layers' own): " + ", ".join(layers.GRADIENT_ESTIMATORS))


def _write(results, args):
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
                    {**r.case._asdict(), "location": r.location, "reference": r.reference}
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


def main(argv=None, prog=PROG):
    """The console script: runs `compare` and returns the exit status.

    0 on success; 2 with one `error: ...` line on stderr for bad arguments or an
    unwritable `--output-dir` (argparse's own status for usage errors); 130 with one
    line on Ctrl-C (the shell's status for SIGINT), no traceback.
    """
    try:
        compare(sys.argv[1:] if argv is None else argv, prog=prog)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            sys.stderr.write(stop.code + "\n")
            return 2
        raise
    except KeyboardInterrupt as interrupt:
        _end_progress_line()
        where = f" {interrupt}" if str(interrupt) else ": stopped, nothing written"
        sys.stderr.write(f"interrupted (Ctrl-C){where}\n")
        return 130
    return 0
