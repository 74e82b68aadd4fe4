"""`tge.vi` vs `tfp.vi` on the same problems (XLA): step-time ratio. Target <= 1.05.

    python benchmarks/vi_overhead.py [--repeats 21] [--steps 300]

`tge.vi.fit_surrogate_posterior` is `tfp.math.minimize` around
`tge.vi.monte_carlo_variational_loss`, exactly as `tfp.vi.fit_surrogate_posterior`
is `tfp.math.minimize` around `tfp.vi.monte_carlo_variational_loss`; the loop is
shared, so the per-step difference is the loss-and-gradient. Both losses run in
the same XLA-compiled loop of SGD steps, compiled once, timed in alternation.
(Timing whole `fit_surrogate_posterior` calls mixes in a recompilation on every
call, 3-4 s here with +-0.5 s noise, which hides a 5% effect.)

Reparameterization is compared with `tfp.vi`'s REPARAMETERIZATION; STL with
TFP's only STL route, DOUBLY_REPARAMETERIZED with `stopped_surrogate_posterior`, on
a 100-d correlated Gaussian (S = 16). IWAE-DReG is compared with the same
DOUBLY_REPARAMETERIZED at K = 16 (S = 1) on the Bayesian logistic regression of
scikit-learn's breast-cancer data (569 x 31): a small target, where a fixed cost per
step would show. That target has no trainable variables, where TFP's DReG gradient
is `tge`'s (TFP gives a target's own variables a `w̃²` weight; `tge` the unbiased `w̃`).
The last row runs the same IWAE-DReG step as one call per step (a compiled loop of one
step, called from Python, as Keras's `fit` calls its train step), so a cost per call
(rather than per step) shows. Written to `benchmarks/results/vi_overhead.{csv,meta.json}`.

The last two columns are the process's voluntary context switches per call of each
arm (Linux; a count, so load hardly moves it). At one call per step, XLA:CPU runs
the step's thunks on the calling thread and hands a matrix product to a worker
thread when other work is queued beside it: each hand-off is a thread wake-up and a
wait (tens of microseconds on a shared 2-core machine), which the compiled loop of
many steps does not show. A difference in this count is a difference in how the
compiled program is scheduled, not in its arithmetic.
"""

import argparse
import functools

import _common
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest.problems import BayesianLogisticRegression, CorrelatedGaussian

tfd = tfp.distributions
SAMPLE_SIZE = 16
# (problem, estimator, S, K, steps per call): the problem is built afresh for each row.
# `None` steps per call: the whole run in one compiled loop (the step's own cost); 1: one
# call of a compiled one-step loop per step, as Keras's `fit` runs (adds the per-call cost).
ROWS = (
    ("correlated_gaussian", "reparameterization", SAMPLE_SIZE, 1, None),
    ("correlated_gaussian", "stl", SAMPLE_SIZE, 1, None),
    ("breast_cancer", "iwae_dreg", 1, 16, None),
    ("breast_cancer", "iwae_dreg", 1, 16, 1),
)
PROBLEMS = {
    "correlated_gaussian": lambda: CorrelatedGaussian(dim=100),
    "breast_cancer": BayesianLogisticRegression,
}


def tge_loss(problem, estimator, sample_size=SAMPLE_SIZE, importance_sample_size=1):
    def loss_fn(seed):
        return tge.vi.monte_carlo_variational_loss(
            problem.target_log_prob,
            problem.surrogate,
            sample_size=sample_size,
            importance_sample_size=importance_sample_size,
            gradient_estimator=estimator,
            seed=seed,
        )

    return loss_fn


def tfp_loss(problem, estimator, sample_size=SAMPLE_SIZE, importance_sample_size=1):
    def loss_fn(seed):
        if estimator == "reparameterization":
            options = dict(gradient_estimator=tfp.vi.GradientEstimators.REPARAMETERIZATION)
        else:
            stopped = tfd.MultivariateNormalDiag(
                tf.stop_gradient(tf.convert_to_tensor(problem.loc)),
                tf.stop_gradient(tf.convert_to_tensor(problem.scale)),
            )
            options = dict(
                gradient_estimator=tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED,
                stopped_surrogate_posterior=stopped,
            )
        return tfp.vi.monte_carlo_variational_loss(
            problem.target_log_prob,
            problem.surrogate,
            sample_size=sample_size,
            importance_sample_size=importance_sample_size,
            seed=seed,
            **options,
        )

    return loss_fn


def voluntary_context_switches():
    """Voluntary context switches of this process so far, over all its threads (Linux), or
    `None` where `/proc` does not tell."""
    import glob

    total = 0
    for path in glob.glob("/proc/self/task/*/status"):
        try:
            with open(path) as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except OSError:  # a thread that ended meanwhile
            continue
    return total if total else None


def switches_per_call(loop, calls, seed):
    """Voluntary context switches per call of `loop` over `calls` calls (`"n/a"` off Linux)."""
    before = voluntary_context_switches()
    _run(loop, calls, seed)
    after = voluntary_context_switches()
    if before is None or after is None:
        return "n/a"
    return f"{(after - before) / calls:.2f}"


def _run(loop, calls, seed):
    """`calls` calls of a compiled loop; the last result copied to the host."""
    for _ in range(calls):
        result = loop(seed)
    return result.numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    rows = []
    seed = tf.constant([0, 1], tf.int32)
    for problem_name, estimator, sample_size, importance_sample_size, per_call in ROWS:
        problem = PROBLEMS[problem_name]()
        per_call = per_call or args.steps
        loops = [
            _common.compiled_training_loop(
                make(problem, estimator, sample_size, importance_sample_size),
                problem.variables,
                per_call,
            )
            for make in (tge_loss, tfp_loss)
        ]
        ours, theirs = _common.interleaved_times(
            [functools.partial(_run, f, args.steps // per_call, seed) for f in loops],
            args.repeats,
        )
        switches = [switches_per_call(f, max(args.steps // per_call, 20), seed) for f in loops]
        rows.append(
            (
                problem_name,
                estimator,
                sample_size,
                importance_sample_size,
                per_call,
                f"{1e6 * np.median(ours) / args.steps:.0f}",
                f"{1e6 * np.median(theirs) / args.steps:.0f}",
                _common.ratio_with_spread(ours, theirs),
                *switches,
            )
        )
        print(" | ".join(str(c) for c in rows[-1]), flush=True)  # progress
    _common.print_table(
        f"tge.vi vs tfp.vi step time, XLA-compiled SGD loops, {args.steps} steps per timed run "
        f"x {args.repeats} rounds alternated; 100-d correlated Gaussian with mean-field q, and "
        "breast-cancer logistic regression (569 x 31)",
        rows,
        [
            "problem",
            "estimator",
            "S",
            "K",
            "steps per call",
            "tge us/step",
            "tfp.vi us/step",
            "ratio tge/tfp median [IQR] (target <= 1.05)",
            "tge context switches per call",
            "tfp.vi context switches per call",
        ],
        name="vi_overhead",
    )


if __name__ == "__main__":
    main()
