"""Multi-sample estimators: step-time ratios measured in one process (XLA).

    python benchmarks/multisample.py [--repeats 7]

1. IWAE-DReG / IWAE on an MLP VAE (784-200-50, Bernoulli decoder, batch 64,
   K = 64). Target <= 1.3. DReG needs the path derivative of `log w` and the
   IWAE gradient for the decoder; `path_weighted_surrogate` gets both from ONE
   backward pass through the decoder.
2. `tge` IWAE-DReG vs `tfp.vi` DOUBLY_REPARAMETERIZED on the same
   non-amortised problem (the 20-d toy Gaussian, K = 64, S = 16; its target has
   no trainable variables, where TFP's estimator is correct). Target <= 1.05.
3. STL / reparameterisation on the same MLP VAE at K = 1 (a target WITH
   trainable variables, the decoder). Target <= 1.1. STL needs the path
   derivative of `log w` and the ordinary decoder gradient; on the fused path
   both come from one backward pass through the decoder, like the
   reparameterisation gradient. The row "stl, two passes" is the inner-tape
   route (`log_weight_terms`) that STL used before, for comparison.
   The ratio is the median over repeats of each repeat's ratio (the two ran back
   to back), with its interquartile range.

    python benchmarks/multisample.py --tables stl   # only table 3

Each loss runs in the same compiled loop of SGD steps, compiled once and timed
in alternation with its comparator (see `_common.compiled_training_loop`).
"""

import argparse

import _common
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util import log_weights as lw
from tfp_gradest.problems import ToyGaussian

tfd = tfp.distributions


def _vae(importance_sample_size):
    keras.utils.set_random_seed(0)
    x = tf.constant((np.random.default_rng(0).random((64, 784)) < 0.3).astype("float32"))
    encoder = keras.Sequential(
        [keras.layers.Dense(200, activation="tanh"), keras.layers.Dense(100)]
    )
    decoder = keras.Sequential(
        [keras.layers.Dense(200, activation="tanh"), keras.layers.Dense(784)]
    )
    model = tge.models.VariationalAutoencoder(
        encoder, decoder, latent_dim=50, importance_sample_size=importance_sample_size
    )
    model(x)

    def loss(estimator):
        estimator = tge.estimators.get(estimator)
        return lambda seed: tf.reduce_mean(
            estimator.loss(
                model.target_log_prob_fn(x),
                model.surrogate_posterior(x),
                1,
                importance_sample_size,
                seed=seed,
            )
        )

    return loss, [v.value for v in model.trainable_variables]


def vae_ratio(args):
    loss, variables = _vae(64)
    names = ["iwae", "iwae_dreg", "rws_dreg", "vimco"]
    loops = [_common.compiled_training_loop(loss(n), variables, args.steps) for n in names]
    seed = tf.constant([0, 1], tf.int32)
    seconds = _common.interleaved_seconds(
        [lambda f=f: f(seed).numpy() for f in loops], args.repeats
    )
    return [
        (n, f"{1e3 * s / args.steps:.2f}", f"{s / seconds[0]:.3f}") for n, s in zip(names, seconds)
    ]


def tfp_ratio(args):
    problem = ToyGaussian()
    k, s = 64, 16

    def ours(seed):
        return tge.estimators.IWAEDReG().loss(
            problem.target_log_prob, problem.surrogate, s, k, seed=seed
        )

    def theirs(seed):
        stopped = tfd.MultivariateNormalDiag(
            tf.stop_gradient(tf.convert_to_tensor(problem.surrogate.loc)),
            problem.surrogate.stddev(),
        )
        return tfp.vi.monte_carlo_variational_loss(
            problem.target_log_prob,
            problem.surrogate,
            sample_size=s,
            importance_sample_size=k,
            gradient_estimator=tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED,
            stopped_surrogate_posterior=stopped,
            seed=seed,
        )

    loops = [
        _common.compiled_training_loop(f, problem.variables, args.steps) for f in (ours, theirs)
    ]
    seed = tf.constant([0, 1], tf.int32)
    a, b = _common.interleaved_seconds([lambda f=f: f(seed).numpy() for f in loops], args.repeats)
    return [
        ("iwae_dreg", f"{1e6 * a / args.steps:.0f}", f"{1e6 * b / args.steps:.0f}", f"{a / b:.3f}")
    ]


class _TwoPassSTL(tge.estimators.GradientEstimator):
    """STL through `log_weight_terms` (inner tape + outer pass): the route STL used to take."""

    data_path = "log_weight_terms"
    max_importance_sample_size = 1

    def _objective(self, inputs):
        terms = lw.log_weight_terms(inputs)
        return terms.log_weights[:, 0], (terms.target_log_prob + terms.path_log_weights)[:, 0]


def stl_ratio(args):
    loss, variables = _vae(1)
    estimators = ["reparameterization", "stl", _TwoPassSTL()]
    loops = [_common.compiled_training_loop(loss(e), variables, args.steps) for e in estimators]
    seed = tf.constant([0, 1], tf.int32)
    times = _common.interleaved_times([lambda f=f: f(seed).numpy() for f in loops], args.repeats)
    names = ["reparameterization", "stl", "stl, two passes (before)"]
    return [
        (n, f"{1e3 * np.median(t) / args.steps:.2f}", _common.ratio_with_spread(t, times[0]))
        for n, t in zip(names, times)
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tables", default="vae,tfp,stl", help="comma-separated: vae,tfp,stl")
    parser.add_argument(
        "--stl-repeats", type=int, default=41, help="repeats of table 3 (short, many: robust)"
    )
    args = parser.parse_args()
    tables = args.tables.split(",")
    if "vae" in tables:
        _common.print_table(
            "MLP VAE 784-200-50, batch 64, K=64, XLA: step time / IWAE "
            f"({args.steps} steps x {args.repeats})",
            vae_ratio(args),
            ["estimator", "ms/step", "ratio to IWAE (DReG target <= 1.3)"],
        )
    if "stl" in tables:
        steps, repeats = args.steps * 2, args.stl_repeats
        _common.print_table(
            f"MLP VAE 784-200-50, batch 64, K=1, XLA: step time / reparameterization "
            f"({steps} steps x {repeats})",
            stl_ratio(argparse.Namespace(steps=steps, repeats=repeats)),
            ["estimator", "ms/step", "ratio median [IQR] (STL target <= 1.1)"],
        )
    if "tfp" in tables:
        args.steps *= 10
        _common.print_table(
            "Toy Gaussian D=20, K=64, S=16, XLA: tge vs tfp.vi DOUBLY_REPARAMETERIZED",
            tfp_ratio(args),
            ["estimator", "tge us/step", "tfp.vi us/step", "ratio (target <= 1.05)"],
        )


if __name__ == "__main__":
    main()
