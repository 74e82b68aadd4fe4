"""`tge.models.HierarchicalVAE` (issue 25 item 6): R2-G2's decoder links are the
reparameterisation gradient when a latent is no wider than the layer it feeds (no solve is
traced), and the recommended configuration uses its upper levels."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import tfp_gradest as tge


@pytest.fixture(scope="module")
def binary_digits():
    """scikit-learn's bundled 8x8 digits, binarised: 1797 x 64, no download."""
    return (load_digits().data / 16.0 > 0.5).astype("float32")


def _loss_gradient_and_op_types(decoder_link_gradient, latent_dims, hidden_units, x):
    """The ELBO's gradient on fixed noise and weights, and the op types of its traced graph."""
    keras.utils.set_random_seed(0)
    model = tge.models.HierarchicalVAE(
        64,
        latent_dims=latent_dims,
        hidden_units=hidden_units,
        decoder_link_gradient=decoder_link_gradient,
        seed=0,
    )
    model(x)

    @tf.function(autograph=False)
    def gradient(seed):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                model.estimator.loss(
                    model.target_log_prob_fn(x), model.surrogate_posterior(x), 1, 1, seed=seed
                )
            )
        return tape.gradient(loss, model.trainable_variables)

    seed = tf.constant([5, 6])
    graph = gradient.get_concrete_function(seed).graph
    op_types = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():  # noqa: SLF001 (while-loop bodies, if any)
        op_types |= {op.type for op in function.graph.get_operations()}
    return [g.numpy() for g in gradient(seed)], op_types


@pytest.mark.parametrize("latent_dims,hidden_units", [((6, 4), 8), ((8, 8), 8)])
def test_r2g2_links_no_wider_than_their_layer_trace_no_solve_and_are_rt_exactly(
    binary_digits, latent_dims, hidden_units
):
    # The R2-G2 paper's hierarchical VAE (50-unit latents into 200-unit layers) is this case:
    # `h = z W + b` with W of full column rank determines ε, so E[ε | h] = ε and R2-G2 is the
    # reparameterisation gradient. The model returns `h` untouched: the same graph (no
    # float64 elimination, no conjugate-gradient loop) and the same numbers, bit for bit.
    x = tf.constant(binary_digits[:8])
    r2g2, r2g2_ops = _loss_gradient_and_op_types("r2g2", latent_dims, hidden_units, x)
    rt, rt_ops = _loss_gradient_and_op_types("reparameterization", latent_dims, hidden_units, x)
    assert r2g2_ops == rt_ops
    for a, b in zip(r2g2, rt):
        np.testing.assert_array_equal(a, b)


def test_power_r2g2_links_wider_than_their_layer_solve_and_change_the_gradient(binary_digits):
    # The companion: a latent wider than its layer (12 > 4) conditions on `h`, which traces
    # extra operations and changes the scale gradients, so the checks above can fail.
    x = tf.constant(binary_digits[:8])
    r2g2, r2g2_ops = _loss_gradient_and_op_types("r2g2", (12, 8), 4, x)
    rt, rt_ops = _loss_gradient_and_op_types("reparameterization", (12, 8), 4, x)
    assert r2g2_ops > rt_ops, r2g2_ops - rt_ops
    assert not all(np.array_equal(a, b) for a, b in zip(r2g2, rt))
