"""`tge.vi` vs `tfp.vi` on the same 100-d problem (XLA): step-time ratio. Target <= 1.05.

    python benchmarks/vi_overhead.py [--repeats 7] [--steps 300]

`tge.vi.fit_surrogate_posterior` is `tfp.math.minimize` around
`tge.vi.monte_carlo_variational_loss`, exactly as `tfp.vi.fit_surrogate_posterior`
is `tfp.math.minimize` around `tfp.vi.monte_carlo_variational_loss`; the loop is
shared, so the per-step difference is the loss-and-gradient. Both losses run in
the same XLA-compiled loop of SGD steps, compiled once, timed in alternation.
(Timing whole `fit_surrogate_posterior` calls mixes in a recompilation on every
call, 3-4 s here with +-0.5 s noise, which hides a 5% effect.)

Reparameterization is compared with `tfp.vi`'s REPARAMETERIZATION; STL with
TFP's only STL route, DOUBLY_REPARAMETERIZED with `stopped_surrogate_posterior`.
"""

import argparse

import _common
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest.problems import CorrelatedGaussian

tfd = tfp.distributions
SAMPLE_SIZE = 16


def tge_loss(problem, estimator):
    def loss_fn(seed):
        return tge.vi.monte_carlo_variational_loss(
            problem.target_log_prob,
            problem.surrogate,
            sample_size=SAMPLE_SIZE,
            gradient_estimator=estimator,
            seed=seed,
        )

    return loss_fn


def tfp_loss(problem, estimator):
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
            sample_size=SAMPLE_SIZE,
            seed=seed,
            **options,
        )

    return loss_fn


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    rows = []
    seed = tf.constant([0, 1], tf.int32)
    for estimator in ["reparameterization", "stl"]:
        problem = CorrelatedGaussian(dim=100)
        loops = [
            _common.compiled_training_loop(make(problem, estimator), problem.variables, args.steps)
            for make in (tge_loss, tfp_loss)
        ]
        ours, theirs = _common.interleaved_times(
            [lambda f=f: f(seed).numpy() for f in loops], args.repeats
        )
        rows.append(
            (
                estimator,
                f"{1e6 * np.median(ours) / args.steps:.0f}",
                f"{1e6 * np.median(theirs) / args.steps:.0f}",
                _common.ratio_with_spread(ours, theirs),
            )
        )
    _common.print_table(
        f"VI step time, 100-d correlated Gaussian, mean-field q, S={SAMPLE_SIZE}, XLA, "
        f"{args.steps} steps x {args.repeats}",
        rows,
        [
            "estimator",
            "tge us/step",
            "tfp.vi us/step",
            "ratio tge/tfp median [IQR] (target <= 1.05)",
        ],
    )


if __name__ == "__main__":
    main()
