"""Gradient variance and step time of the linear-response control variate (issue 25.3).

`tge.estimators.LinearResponseCV` ("linear_response_cv": STL's path gradient with a
leave-one-out linear-response control variate) against plain reparameterisation and STL,
on the built-in problems with a diagonal Gaussian surrogate (`gaussian`: a correlated
Gaussian target; `logistic_regression`; `bnn_digits`), at the surrogate's initialisation
and after `--fit-steps` Adam steps (`problem.fit`), for each `S` in `--sample-sizes`.

* Variance: `--draws` independent gradients of the loss at fixed parameters (one compiled
  loop per estimator), summed over the surrogate's parameters; `ratio to reparam.` and
  `ratio to stl` are that sum over theirs (below 1: less variance). A property of the
  estimator at fixed parameters: the machine's load does not change it.
* Time: `--steps` SGD steps in one XLA-compiled loop per estimator, the loops timed in
  alternation `--repeats` times (`_common.interleaved_times`); `us/step` is the median, and
  `step ratio to reparam.` the median [IQR] of the per-round ratios. Trust it on a quiet
  machine only.

Full run (the lead's, on a quiet machine): `python benchmarks/control_variate.py` (estimated
10-20 minutes on 2 cores, not yet run in full); `--small` is the smoke run (about a minute,
`control_variate_small.csv`).
"""

import argparse
import os

import _common
import numpy as np

ESTIMATORS = ("reparameterization", "stl", "linear_response_cv")
HEADER = [
    "problem",
    "point",
    "S",
    "estimator",
    "variance sum",
    "ratio to reparam.",
    "ratio to stl",
    "us/step",
    "step ratio to reparam. median [IQR]",
    "draws",
]


def _variance_sum(problem, estimator, sample_size, num_draws, seed, jit_compile):
    import tfp_gradest as tge

    estimator = tge.estimators.get(estimator)
    draws = tge.diagnostics.gradient_draws(
        lambda s: estimator.loss(problem.target_log_prob, problem.surrogate, sample_size, seed=s),
        problem.variables,
        num_draws,
        seed,
        jit_compile=jit_compile,
    )
    return float(sum(np.sum(np.var(d.numpy(), axis=0, ddof=1)) for d in draws))


def _step_times(problem, sample_size, num_steps, repeats):
    """Seconds per step of each estimator's compiled SGD loop, `[estimator, repeat]`."""
    import tensorflow as tf

    import tfp_gradest as tge

    saved = [v.numpy() for v in problem.variables]
    runs = []
    for name in ESTIMATORS:
        estimator = tge.estimators.get(name)
        loop = _common.compiled_training_loop(
            lambda s, e=estimator: e.loss(
                problem.target_log_prob, problem.surrogate, sample_size, seed=s
            ),
            problem.variables,
            num_steps,
        )
        runs.append(lambda loop=loop: loop(tf.constant([0, 1], tf.int32)).numpy())
    times = np.asarray(_common.interleaved_times(runs, repeats)) / num_steps
    for v, value in zip(problem.variables, saved):  # the loops moved them: put them back
        v.assign(value)
    return times


def main(argv=None):
    import tfp_gradest as tge

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--problems", nargs="+", default=["gaussian", "logistic_regression", "bnn_digits"]
    )
    parser.add_argument("--sample-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--fit-steps", type=int, default=500)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200, help="SGD steps per timed loop")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="smoke run: tiny sizes")
    parser.add_argument(
        "--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    )
    args = parser.parse_args(argv)
    if args.small:
        args.problems, args.sample_sizes, args.fit_steps = ["gaussian"], [4], 5
        args.draws, args.steps, args.repeats = 50, 5, 2
    jit_compile = not args.small

    rows = []
    for problem_name in args.problems:
        problem = tge.problems.get(problem_name)
        for point in ("init", "fitted"):
            if point == "fitted":
                problem.fit(args.fit_steps, seed=args.seed)
            for s in args.sample_sizes:
                variances = {
                    name: _variance_sum(problem, name, s, args.draws, (args.seed, s), jit_compile)
                    for name in ESTIMATORS
                }
                times = _step_times(problem, s, args.steps, args.repeats)
                medians = np.median(times, axis=1)
                for i, name in enumerate(ESTIMATORS):
                    rows.append(
                        [
                            problem_name,
                            point,
                            s,
                            name,
                            f"{variances[name]:.4g}",
                            f"{variances[name] / variances['reparameterization']:.3f}",
                            f"{variances[name] / variances['stl']:.3f}",
                            f"{medians[i] * 1e6:.1f}",
                            _common.ratio_with_spread(times[i], times[0]),
                            args.draws,
                        ]
                    )
    title = (
        "Linear-response control variate (leave-one-out fit) vs reparameterisation and STL: "
        f"summed gradient variance ({args.draws} draws) and step time ({args.steps}-step "
        f"compiled loops, {args.repeats} alternated rounds), at initialisation and after "
        f"{args.fit_steps} Adam steps"
    )
    name = "control_variate_small" if args.small else "control_variate"
    _common.print_table(title, rows, HEADER, name=name, output_dir=args.output_dir)
    return rows


if __name__ == "__main__":
    main()
