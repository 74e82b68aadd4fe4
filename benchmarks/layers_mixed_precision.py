"""Bayesian layers under mixed precision: how far R2-G2's scale gradient moves from float32's.

One Conv2D (8 x 6 x 6 x 2 input, 4 filters, 3 x 3, stride 2: 4 output
positions < 19 weights per filter, so the R2-G2 solve runs) with the same
weights and the same noise seeds under "float32", "mixed_float16" and
"mixed_bfloat16"; prints the relative difference of the posterior-scale
gradients, per draw and of their mean over the draws.

    python benchmarks/layers_mixed_precision.py
"""

import _common  # noqa: F401  (quiet TensorFlow)
import keras
import numpy as np
import tensorflow as tf

import tfp_gradest as tge

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def scale_gradients(policy, weights, x, num_draws):
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = tge.layers.Conv2DReparameterization(
            4, 3, strides=2, gradient_estimator="r2g2", initial_posterior_scale=0.1, seed=0
        )
        layer.build(x.shape)
        if weights is not None:
            layer.set_weights(weights)
        state = layer.seed_generator.state
        state.assign(np.zeros(state.shape, state.dtype))  # the same noise under every policy
        (draws,) = tge.diagnostics.model_gradient_draws(
            lambda: tf.reduce_sum(tf.cast(tf.sin(layer(x, training=True)), tf.float32)),
            [layer.kernel_scale_raw],
            num_draws,
            state_variables=layer.non_trainable_variables,
            jit_compile=False,
        )
        return layer.get_weights(), draws
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(num_draws=50):
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype("float32")
    weights, reference = scale_gradients("float32", None, x, num_draws)
    for policy in POLICIES[1:]:
        _, draws = scale_gradients(policy, weights, x, num_draws)
        assert np.all(np.isfinite(draws))
        per_draw = np.linalg.norm(draws - reference) / np.linalg.norm(reference)
        of_mean = np.linalg.norm((draws - reference).mean(0)) / np.linalg.norm(reference.mean(0))
        print(f"{policy}: relative difference per draw {per_draw:.2e}, of the mean {of_mean:.2e}")


if __name__ == "__main__":
    main()
