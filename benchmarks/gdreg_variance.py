"""Gradient variance of GDReG against IWAE and IWAE-DReG on the hierarchical VAE (issue 25.1).

A `tge.models.HierarchicalVAE` on binarised digits is first trained for a while (IWAE,
the model's default), so that the encoder and the prior conditionals are away from their
initialisation; then, at those fixed weights and on one fixed batch, each estimator's
gradient of the training loss is drawn `--draws` times (independent seeds, one compiled
loop) and its variance summed over the parameters of three groups:

* `encoder`: the surrogate's parameters φ (every `q(z_{l+1} | z_l)`);
* `prior`: the decoder networks of the prior conditionals `p(z_l | z_{l+1})`, l ≥ 1
  (the θ that GDReG doubly reparameterises through the model's `latent_distributions`);
* `likelihood`: the decoder of `p(x | z_1)` (θ that every estimator here gives IWAE's
  gradient, so its variance differs by sampling noise only).

The column `ratio to iwae` is the estimator's summed variance over IWAE's (below 1: less
variance). Variance is a property of the estimator at fixed weights, not a timing: the
machine's load does not change it. Estimators: `iwae`, `iwae_dreg`, `gdreg`
(`conditional_scores="transform"`) and `gdreg_keep` (`GDReG("keep")`: IWAE-DReG's φ-gradient
and GDReG's prior gradient).

Two stochastic layers by default (`--latent-dims 32 32`): with three, IWAE-DReG's loss
fails on this model today (`HierarchicalVAE`'s encoder lambdas share the argument name
`below`, so its `JointDistributionSequential` refuses the positional `log_prob(z)` that
the path-weighted data path calls), while GDReG runs.

Full run (the lead's): `python benchmarks/gdreg_variance.py` (K = 4, 16, 64; about 30
minutes on a quiet 2-core machine, an hour under load); `--small` is the smoke run (about
a minute).
"""

import argparse
import os
import sys

import _common
import keras
import numpy as np
import tensorflow as tf

import tfp_gradest as tge

ESTIMATORS = {
    "iwae": "iwae",
    "iwae_dreg": "iwae_dreg",
    "gdreg": tge.estimators.GDReG("transform"),
    "gdreg_keep": tge.estimators.GDReG("keep"),
}
HEADER = ["K", "estimator", "group", "variance sum", "ratio to iwae", "draws"]


def _groups(model):
    """The model's trainable variables in the three groups of the module docstring."""
    encoder = [v for net in model.encoders for v in net.trainable_variables]
    likelihood = model.decoders[0].trainable_variables + model.decoder_links[0].trainable_variables
    prior = [
        v
        for nets in (model.decoders[1:], model.decoder_links[1:])
        for net in nets
        for v in net.trainable_variables
    ]
    return {"encoder": encoder, "prior": prior, "likelihood": likelihood}


def _variance_sums(model, estimator, x, k, num_draws, seed, jit_compile=True):
    estimator = tge.estimators.get(estimator)
    groups = _groups(model)
    variables = [v for vs in groups.values() for v in vs]

    def loss(s):
        per_example = estimator.loss(
            model.target_log_prob_fn(x), model.surrogate_posterior(x), 1, k, seed=s
        )
        return tf.reduce_mean(per_example)

    draws = tge.diagnostics.gradient_draws(
        loss, [v.value for v in variables], num_draws, seed, jit_compile=jit_compile
    )
    variances = [float(np.sum(np.var(d.numpy(), axis=0, ddof=1))) for d in draws]
    out, start = {}, 0
    for name, vs in groups.items():
        out[name] = sum(variances[start : start + len(vs)])
        start += len(vs)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--latent-dims", type=int, nargs="+", default=[32, 32])
    parser.add_argument("--hidden-units", type=int, default=64)
    parser.add_argument("--train-epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32, help="examples in the measured batch")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="smoke run: tiny model, few draws")
    parser.add_argument(
        "--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    )
    args = parser.parse_args(argv)
    if args.small:
        args.ks, args.latent_dims, args.hidden_units = [3], [4, 3], 8
        args.train_epochs, args.batch, args.draws = 1, 8, 20
    if keras.backend.backend() != "tensorflow":
        sys.exit("gdreg_variance.py draws TensorFlow gradients: run with KERAS_BACKEND=tensorflow")

    x_train, _, x_test, _, data = tge.datasets.load_images(prefer="digits", verbose=False)
    x_train = (x_train > 0.5).astype("float32")
    x_batch = tf.constant((x_test[: args.batch] > 0.5).astype("float32"))
    keras.utils.set_random_seed(args.seed)
    model = tge.models.HierarchicalVAE(
        x_train.shape[1],
        latent_dims=tuple(args.latent_dims),
        hidden_units=args.hidden_units,
        seed=args.seed,
    )
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=not args.small)
    model.fit(x_train, epochs=args.train_epochs, batch_size=64, verbose=0)

    rows = []
    for k in args.ks:
        sums = {
            name: _variance_sums(
                model, est, x_batch, k, args.draws, (args.seed, k), jit_compile=not args.small
            )
            for name, est in ESTIMATORS.items()
        }
        for name in ESTIMATORS:
            for group, value in sums[name].items():
                ratio = value / sums["iwae"][group] if sums["iwae"][group] > 0 else float("nan")
                rows.append([k, name, group, f"{value:.4g}", f"{ratio:.3f}", args.draws])
    dims = ",".join(str(d) for d in args.latent_dims)
    title = (
        f"GDReG vs IWAE and IWAE-DReG: summed gradient variance on the hierarchical VAE "
        f"({data}, latent_dims=({dims}), hidden_units={args.hidden_units}, "
        f"{args.train_epochs} epochs of IWAE training, batch {args.batch})"
    )
    name = "gdreg_variance_small" if args.small else "gdreg_variance"
    _common.print_table(title, rows, HEADER, name=name, output_dir=args.output_dir)
    return rows


if __name__ == "__main__":
    main()
