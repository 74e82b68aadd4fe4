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

`--noise rqmc` draws the estimators' base normals by randomised quasi-Monte Carlo (one
digitally shifted Sobol point per objective; pathwise estimators on the surrogate
problems only): run it beside the default `--noise iid` to see the variance it removes.

`--backend jax` draws the gradients on TFP's JAX substrate (one jitted `jax.lax.map`
of `jax.grad` per estimator) and prints the same tables; the default is the active
Keras backend (`KERAS_BACKEND`), and `--backend` sets `KERAS_BACKEND` for the Keras
problem (`bnn_layers`) unless Keras is already imported. A problem that cannot run
there is refused (the showcase skips it, saying so).

Arguments and `--output-dir` are checked before TensorFlow is imported, so
`--help` and mistakes answer at once with one `error:` line (exit status 2);
TensorFlow's native logs are kept off the terminal unless `--verbose`; Ctrl-C
stops with one line (exit status 130).
"""

# (This docstring is `compare --help`'s text.) One module per job: `_arguments` (the parser
# and the cases, checked before TensorFlow is imported), `_quiet` (TensorFlow's log lines at
# the file-descriptor level), `_running` (building the problems and drawing), `_tables` (the
# printed tables), `_files` (the run's file names, the `--output-dir` check, CSV/JSON/PNG).
# This module ties them together: `compare`, and `main` for the console script.

import os
import sys

from tfp_gradest.cli import _arguments, _files, _quiet, _running, _tables
from tfp_gradest.cli._arguments import PROG, Case
from tfp_gradest.cli._running import CaseResult

__all__ = ["Case", "CaseResult", "compare", "main"]


def compare(argv=None, prog=PROG):
    """Parses `argv` (`compare ...`), runs the comparison, prints and writes it.

    Returns:
      A list of `CaseResult`. Raises `SystemExit("error: ...")` for bad arguments or
      an `--output-dir` that cannot be written, before any work.
    """
    args = _arguments.build_parser(prog, description=__doc__).parse_args(
        ["compare"] if not argv else argv
    )
    if args.command == "list":
        with _quiet.quiet_tensorflow(args.verbose):
            _running.list_names()
        return []
    try:
        args.backend = _arguments.backend(args)
        cases = _arguments.cases(args)
        _files.check_output_dir(args.output_dir)
    except ValueError as error:  # bad names, sizes or folder: a message, not a traceback
        raise SystemExit(f"error: {error}") from None
    if "keras" not in sys.modules:  # Keras problems (bnn_layers) run on the chosen backend
        os.environ["KERAS_BACKEND"] = args.backend
    try:
        with _quiet.quiet_tensorflow(args.verbose):
            try:
                prepared = _prepare(cases, args)
            except (ValueError, TypeError) as error:  # an estimator that does not apply here
                raise SystemExit(f"error: {error}") from None
            results = [_running.run_case(case, problem, args) for case, problem in prepared]
    finally:
        _running.end_progress_line()
    print(
        f"seed={args.seed}; backend={args.backend}; step time: median over {args.repeats} "
        "alternated repeats "
        f"of the compiled draw loop, per gradient (quartiles in brackets)"
    )
    for result in results:
        _tables.print_case(result)
    try:
        _files.write(results, args)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"while writing to {args.output_dir}") from None
    return results


def _prepare(cases, args):
    """`(case, problem)` of each case; the showcase skips (saying so on stderr) a case whose
    problem cannot run on `--backend`, any other run refuses it."""
    if args.problem is not None or len(cases) == 1:
        return [_running.prepare(case, args.backend) for case in cases]
    prepared = []
    for case in cases:
        try:
            prepared.append(_running.prepare(case, args.backend))
        except ValueError as error:
            if not str(error).startswith("--backend"):
                raise
            sys.stderr.write(f"skipping {case.problem} in the showcase: {error}\n")
    return prepared


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
        _running.end_progress_line()
        where = f" {interrupt}" if str(interrupt) else ": stopped, nothing written"
        sys.stderr.write(f"interrupted (Ctrl-C){where}\n")
        return 130
    return 0
