"""Running a comparison: building each case's problem, drawing, the progress line."""

import sys
from typing import NamedTuple

from tfp_gradest import problems
from tfp_gradest.cli._arguments import Case, estimator_config

__all__ = ["CaseResult", "end_progress_line", "list_names", "prepare", "progress", "run_case"]


class CaseResult(NamedTuple):
    """One case's outcome: the `Case` run, where and against what it was measured, the reports."""

    case: Case
    location: str  # where the gradients were drawn
    reference: str  # what the bias column is measured against
    reports: list  # tge.diagnostics.EstimatorReport, one per estimator


_progress_line_open = False  # a progress bar without its newline is on the terminal


def progress(index, total, name):
    """Draws the progress bar on stderr: `index` of `total` estimators done, `name` next."""
    global _progress_line_open
    width = 24
    done = int(width * index / total)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {index}/{total} {name:<28}")
    sys.stderr.flush()
    _progress_line_open = True


def end_progress_line():
    global _progress_line_open
    if _progress_line_open:
        sys.stderr.write("\n")
        _progress_line_open = False


def prepare(case, backend="tensorflow"):
    """Builds the case's problem and checks the backend, every estimator and size before
    anything runs."""
    problem = problems.get(case.problem)
    try:
        problem.check_substrate(backend)
    except ValueError as error:
        raise ValueError(f"--backend {backend}: {error}") from None
    sizes = case.sample_size, case.importance_sample_size  # None: the problem's own
    case = case._replace(
        sample_size=sizes[0] or problem.default_sample_size,
        importance_sample_size=sizes[1] or problem.default_importance_sample_size,
    )
    estimators = case.estimators
    if estimators is None and case.noise != "iid":
        estimators = _accepting_noise(problem, case)
    estimators = tuple(_estimator(spec) for spec in estimators or problem.default_estimators)
    case = case._replace(estimators=estimators)
    options = {} if case.noise == "iid" else {"noise": case.noise}
    for name in case.estimators:
        problem.validate_estimator(name, case.sample_size, case.importance_sample_size, **options)
    return case, problem


def _estimator(spec):
    """`spec`'s estimator: a name as it is, `name(key=value, ...)` as that estimator object
    (its table label is then its `repr`)."""
    config = estimator_config(spec)
    if isinstance(config, str):
        return config
    from tfp_gradest import estimators

    return estimators.get(config)  # its errors name the option and what the estimator takes


def _accepting_noise(problem, case):
    """The problem's default estimators that take `--noise` (the pathwise ones), saying on
    stderr which are left out; the defaults unchanged if none is (its own refusal follows)."""
    kept, dropped = [], []
    for name in problem.default_estimators:
        try:
            problem.validate_estimator(
                _estimator(name), case.sample_size, case.importance_sample_size, noise=case.noise
            )
        except (TypeError, ValueError):
            dropped.append(name)
        else:
            kept.append(name)
    if dropped and kept:
        sys.stderr.write(
            f"--noise {case.noise}: comparing {', '.join(kept)} ({', '.join(dropped)} left "
            f"out: they do not take --noise {case.noise}, e.g. a score-function estimator "
            "needs independent samples)\n"
        )
        return tuple(kept)
    return None


def run_case(case, problem, args):
    from tfp_gradest import diagnostics

    backend = getattr(args, "backend", None) or "tensorflow"
    if case.at == "fitted":
        problem.fit(args.fit_steps, seed=args.seed, substrate=backend)
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
        progress=progress,
        reference="auto",
        timing_repeats=args.repeats,
        reference_draws=args.reference_draws,
        backend=backend,
        **({} if case.noise == "iid" else {"noise": case.noise}),
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
    progress(len(case.estimators), len(case.estimators), "done")
    end_progress_line()
    return CaseResult(case, location, described, reports)


def list_names():
    """Prints the problem and estimator names (`list`)."""
    from tfp_gradest import estimators, layers

    print("problems: " + ", ".join(problems.names()))
    print("estimators (surrogate problems): " + ", ".join(estimators.names()))
    print("estimators (bnn_layers, the layers' own): " + ", ".join(layers.GRADIENT_ESTIMATORS))
