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


# --- kl_weight: the KL warm-up factor ------------------------------------------------------


def _loss_on_seed(model, x, state, kl_weight):
    """`compute_loss(x)` at `kl_weight`, from the seed generator's `state` (the same noise)."""
    model.kl_weight = kl_weight
    model.seed_generator.state.assign(state)
    return float(model.compute_loss(x))


def test_kl_weight_tempers_the_likelihood_and_scales_the_loss(binary_digits):
    # Exact check of the docstring's formula, `β · loss(log p(x | z) / β + log p(z))`, with
    # the likelihood and the prior separated by hand (K = 3: any estimator, any K).
    from tfp_gradest.models._loss import estimator_training_loss, step_seed

    keras.utils.set_random_seed(0)
    model = tge.models.HierarchicalVAE(
        64, latent_dims=(6, 4), hidden_units=8, importance_sample_size=3, seed=0
    )
    x = tf.constant(binary_digits[:16])
    model(x)
    state = model.seed_generator.state.numpy()

    def by_hand(beta):
        model.seed_generator.state.assign(state)
        full = model._target(x, "reparameterization")
        prior = model._target(x, "reparameterization", likelihood_weight=0.0)
        tempered = lambda *z: (full(*z) - prior(*z)) / beta + prior(*z)  # noqa: E731
        seed = step_seed(model.seed_generator)
        loss = model.estimator.loss(tempered, model.surrogate_posterior(x), 1, 3, seed=seed)
        return beta * float(tf.reduce_mean(loss))

    for beta in (1.0, 0.3):
        np.testing.assert_allclose(_loss_on_seed(model, x, state, beta), by_hand(beta), rtol=1e-5)
    # β = 1 is the estimator's loss, bit for bit (the loss before the option).
    model.kl_weight = 1.0
    model.seed_generator.state.assign(state)
    plain = float(estimator_training_loss(model, x, None))
    assert _loss_on_seed(model, x, state, 1.0) == plain


def test_with_the_elbo_kl_weight_is_the_kl_warm_up_objective(binary_digits):
    # K = 1: β · (−E[log p(x|z)/β + log p(z) − log q]) = −E[log p(x|z)] + β · KL term, affine
    # in β on the same noise (the β-ELBO of KL warm-up), its gradient too.
    keras.utils.set_random_seed(1)
    model = tge.models.HierarchicalVAE(64, latent_dims=(6, 4), hidden_units=8, seed=1)
    x = tf.constant(binary_digits[:16])
    model(x)
    state = model.seed_generator.state.numpy()
    losses = {b: _loss_on_seed(model, x, state, b) for b in (1.0, 0.5, 0.25)}
    np.testing.assert_allclose(
        losses[1.0] - losses[0.5], 2 * (losses[0.5] - losses[0.25]), rtol=1e-4, atol=1e-5
    )
    assert losses[1.0] != losses[0.5]  # power: β reaches the loss


def test_kl_weight_is_live_in_compiled_functions_checked_and_saved(binary_digits):
    keras.utils.set_random_seed(2)
    model = tge.models.HierarchicalVAE(64, latent_dims=(6, 4), hidden_units=8, seed=2)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    x = binary_digits[:32]
    model(x[:1])
    state = model.seed_generator.state.numpy()
    evaluated = {}
    for beta in (1.0, 0.5, 0.25):  # one compiled test function, three values
        model.kl_weight = beta
        model.seed_generator.state.assign(state)
        evaluated[beta] = model.test_on_batch(x)
    # Read when the function runs, not frozen at tracing: the loss is affine in β (K = 1).
    assert evaluated[0.5] != evaluated[1.0]
    np.testing.assert_allclose(
        evaluated[1.0] - evaluated[0.5], 2 * (evaluated[0.5] - evaluated[0.25]), rtol=1e-3
    )
    # A warm-up with the callback, then the last value in the config; an older config
    # (without the key) loads with 1.
    model.kl_weight = 1.0  # the callback's base: the value when it first sees the model
    annealing = tge.callbacks.KLAnnealing(lambda epoch: (epoch + 1) / 4, layers=[model])
    history = model.fit(x, epochs=2, batch_size=16, verbose=0, callbacks=[annealing])
    assert history.history["kl_factor"] == [0.25, 0.5] and model.kl_weight == 0.5
    config = model.get_config()
    assert config["kl_weight"] == 0.5
    del config["kl_weight"]
    assert tge.models.HierarchicalVAE.from_config(config).kl_weight == 1.0
    for bad, error in ((0.0, ValueError), (-1.0, ValueError), ("1", TypeError)):
        with pytest.raises(error, match="kl_weight.*Received"):
            tge.models.HierarchicalVAE(64, latent_dims=(2,), kl_weight=bad)


# --- the regression: the default width uses its levels ---------------------------------------


def _trained_level_diagnostics(binary_digits, **kwargs):
    """Active units and KL per level of a 2-level model after 88 Adam steps (fixed seed)."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    from hvae_levels import level_diagnostics

    keras.utils.set_random_seed(0)
    model = tge.models.HierarchicalVAE(64, latent_dims=(16, 16), seed=0, **kwargs)
    model.compile(keras.optimizers.Adam(3e-3), steps_per_execution=22)
    model.fit(binary_digits[:1408], epochs=4, batch_size=64, verbose=0)
    return level_diagnostics(model, binary_digits[1408:1600], seed=0)


def _uses_both_levels(active):
    return active[0] >= 8 and active[1] >= 1


def test_the_default_width_with_importance_weights_uses_the_upper_level(binary_digits):
    # Issue 25.6: with 16 hidden units and the ELBO (the old default and the end-to-end
    # benchmark's setting) every level collapsed to its prior (0 active units, the bound of
    # independent pixels); with the default width and K = 8 (the recommended configuration)
    # both levels are active after a few steps. Deterministic (fixed seeds); measured here:
    # [16, 3] active units against [0, 0] for the old setting (the companion below).
    active, kls = _trained_level_diagnostics(binary_digits, importance_sample_size=8)
    assert _uses_both_levels(active), (active, kls)


def test_power_the_old_width_and_the_elbo_leave_both_levels_unused(binary_digits):
    active, kls = _trained_level_diagnostics(binary_digits, hidden_units=16)
    assert not _uses_both_levels(active), (active, kls)


def test_the_benchmark_smoke_run_writes_rows_summary_and_cost(tmp_path):
    # benchmarks/hvae_levels.py --small, cut to two small models: per-run rows, the paired
    # difference to 1 level per seed, and the run's cost in the metadata.
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import hvae_levels

    argv = ["--small", "--studies", "levels", "--configs", "before", "--levels", "1", "2"]
    rows, summary = hvae_levels.main([*argv, "--output-dir", str(tmp_path)])
    assert len(rows) == 4 and all(np.isfinite(r["test_bound"]) for r in rows)
    two = next(r for r in summary if r["levels"] == 2)
    assert len(two["minus_1_level_per_seed"].split()) == 2 and two["active_units"].count("/") == 1
    meta = json.loads((tmp_path / "hvae_levels_small_summary.meta.json").read_text())
    assert meta["note"].startswith("small smoke test") and meta["cost"]["cpu_seconds"] > 0
    assert (tmp_path / "hvae_levels_small.csv").exists()
