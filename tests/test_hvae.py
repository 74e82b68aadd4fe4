"""`tge.models.HierarchicalVAE`: shapes, training with `model.fit`, saving, dtypes, XLA,
the estimators' route, and R2-G2's gradient."""

import json
import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from sklearn.datasets import load_digits

import tfp_gradest as tge
from tests.conftest import Z_THRESHOLD
from tfp_gradest import r2g2


@pytest.fixture(scope="module")
def binary_digits():
    """scikit-learn's bundled 8x8 digits, binarised: 1797 x 64, no download."""
    return (load_digits().data / 16.0 > 0.5).astype("float32")


def _hvae(decoder_link_gradient="r2g2", seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    kwargs = {"latent_dims": (12, 8), "hidden_units": 4, **kwargs}
    return tge.models.HierarchicalVAE(
        64, decoder_link_gradient=decoder_link_gradient, seed=seed, **kwargs
    )


class _DetachedScaleHVAE(tge.models.HierarchicalVAE):
    """A deliberately wrong gradient: the decoders' term is dropped from every σ gradient."""

    def decoder_input(self, level, latent, below, decoder_link_gradient=None):
        # z's gradient through the link is cut; μ (recomputed from `below`) keeps its own.
        loc, _ = self.encoder_conditional(level, below)
        return self.decoder_links[level](tf.stop_gradient(latent) + (loc - tf.stop_gradient(loc)))


def test_shapes_and_a_finite_loss(binary_digits):
    model = _hvae(latent_dims=(12, 8, 6))
    x = tf.constant(binary_digits[:5])
    assert model(x).shape == (5, 12)
    assert model.log_weights(x, 3, tf.constant([1, 2])).shape == (3, 5)
    bound = model.log_likelihood_bound(x, 7)
    assert bound.shape == (5,) and np.all(np.isfinite(bound))
    assert np.isfinite(model.compute_loss(x))


def test_the_decoder_link_gradient_never_changes_the_loss_value(binary_digits):
    x = tf.constant(binary_digits[:8])
    values = []
    for decoder_link_gradient in ["reparameterization", "r2g2"]:
        model = _hvae(decoder_link_gradient)
        values.append(model.compute_loss(x).numpy())
    np.testing.assert_array_equal(values[0], values[1])


def _applicable(name, k):
    try:  # the HVAE's posterior is fully reparameterised, as a Normal
        tge.estimators.get(name).validate(tfp.distributions.Normal(0.0, 1.0), 1, k)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("k", [1, 3])
def test_the_estimator_never_changes_the_loss_value(binary_digits, k):
    # The estimator chooses the gradient, never the value (TFP's rule): with the same seed and
    # weights every estimator that accepts K reports the same negative bound. (JVI's value is
    # the jackknife estimate, not the bound.)
    x = tf.constant(binary_digits[:8])
    names = [
        name
        for name in tge.estimators.names()
        if _applicable(name, k) and not name.startswith("jvi")
    ]
    assert len(names) >= (8 if k == 1 else 6), names
    values = {}
    for name in names:
        pathwise = tge.estimators.get(name).requires_reparameterization
        link = "r2g2" if pathwise and k == 1 else "reparameterization"  # R2-G2: the ELBO only
        # Three levels: the encoder's conditionals share an argument name, which a
        # `JointDistributionSequential` refuses for positional values (every data path
        # evaluates `log q` by keyword).
        model = _hvae(
            link, gradient_estimator=name, importance_sample_size=k, latent_dims=(12, 8, 6)
        )
        values[name] = model.compute_loss(x).numpy()
    reference = values["iwae"]
    assert np.isfinite(reference)
    for name, value in values.items():
        np.testing.assert_allclose(value, reference, rtol=2e-7, err_msg=name)


@pytest.mark.parametrize("decoder_link_gradient", ["reparameterization", "r2g2"])
def test_fit_reduces_the_loss(binary_digits, decoder_link_gradient):
    # XLA is exercised by the gradient tests below (jit_compile=True), cheaper than fit's compile.
    model = _hvae(decoder_link_gradient, latent_dims=(12, 8), hidden_units=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    losses = model.fit(binary_digits[:600], epochs=3, batch_size=100, verbose=0).history["loss"]
    assert all(np.isfinite(losses))
    # 64 binary pixels start near 64 log 2 ~ 44 nats (plus the KL); the bound must improve.
    assert losses[-1] < 0.85 * losses[0], losses


def test_float64_gradients_are_float64_and_finite(binary_digits):
    model = _hvae(dtype="float64")
    x = tf.constant(binary_digits[:6], tf.float64)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x)
    grads = tape.gradient(loss, model.trainable_variables)
    assert loss.dtype == tf.float64
    assert all(g.dtype == tf.float64 and np.all(np.isfinite(g)) for g in grads)


def test_keras_round_trip_keeps_the_bound(binary_digits, tmp_path):
    model = _hvae("reparameterization", importance_sample_size=2)
    model.compile(optimizer="adam")
    model.fit(binary_digits[:100], epochs=1, batch_size=50, verbose=0)
    path = str(tmp_path / "hvae.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.latent_dims == (12, 8)
    assert restored.decoder_link_gradient == "reparameterization"
    assert restored.importance_sample_size == 2 and restored.gradient_estimator == "iwae"
    x = binary_digits[:10]
    np.testing.assert_array_equal(
        model.log_likelihood_bound(x, 4), restored.log_likelihood_bound(x, 4)
    )


def test_an_estimator_instance_is_saved_as_its_config(binary_digits, tmp_path):
    # Issue 23: `gradient_estimator=` takes a name, a class, an instance or a config dict; a
    # name stays a name in the config, anything else is written as the estimator's config.
    estimator = tge.estimators.DReG(alpha=0.5)
    model = _hvae("reparameterization", gradient_estimator=estimator, importance_sample_size=2)
    assert model.estimator is estimator
    config = model.get_config()
    assert config["gradient_estimator"] == {"class_name": "DReG", "config": {"alpha": 0.5}}
    json.dumps(config["gradient_estimator"])
    x = binary_digits[:10]
    model(x)
    path = str(tmp_path / "hvae.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.save(path)
    assert not [w for w in caught if "latent_gradient" in str(w.message)]  # no deprecated use
    restored = keras.models.load_model(path)
    assert restored.estimator == estimator and restored.get_config() == config
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    for identifier in (tge.estimators.DReG, config["gradient_estimator"]):
        assert type(_hvae(gradient_estimator=identifier).estimator) is tge.estimators.DReG


def test_latent_gradient_still_works_for_one_release_with_a_deprecation_warning():
    small = {"latent_dims": (4,), "hidden_units": 2}
    with pytest.warns(
        DeprecationWarning, match=r"write `decoder_link_gradient='reparameterization'` instead"
    ):
        model = tge.models.HierarchicalVAE(64, latent_gradient="reparameterization", **small)
    assert model.decoder_link_gradient == "reparameterization"
    assert model.gradient_estimator == "iwae"  # the old gradient: reparameterised bound
    with pytest.warns(DeprecationWarning, match="read `decoder_link_gradient` instead"):
        assert model.latent_gradient == "reparameterization"
    # A config saved before the rename still loads (a `.keras` file calls from_config).
    config = model.get_config()
    assert "latent_gradient" not in config
    for key in ("decoder_link_gradient", "gradient_estimator", "sample_size"):
        del config[key]
    with pytest.warns(DeprecationWarning, match="latent_gradient"):
        restored = tge.models.HierarchicalVAE.from_config({**config, "latent_gradient": "r2g2"})
    assert restored.decoder_link_gradient == "r2g2" and restored.gradient_estimator == "iwae"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling does not warn
        tge.models.HierarchicalVAE(64, decoder_link_gradient="reparameterization", **small)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="pass only"):
        tge.models.HierarchicalVAE(
            64, latent_gradient="reparameterization", decoder_link_gradient="r2g2"
        )


def test_an_old_config_with_r2g2_links_and_k_above_1_still_loads():
    # 0.2 saved `latent_gradient="r2g2"` (its default) in every `.keras` file; with K > 1 the
    # renamed option refuses it (biased there). The warning must not tell the user to write
    # that refused spelling, and the model must load, with the unbiased links.
    config = _hvae("reparameterization", importance_sample_size=3).get_config()
    for key in ("decoder_link_gradient", "gradient_estimator", "sample_size"):
        del config[key]
    with pytest.warns(
        DeprecationWarning, match=r"write `decoder_link_gradient='reparameterization'` instead"
    ):
        restored = tge.models.HierarchicalVAE.from_config({**config, "latent_gradient": "r2g2"})
    assert restored.decoder_link_gradient == "reparameterization"
    assert restored.importance_sample_size == 3
    # Both spellings asking for 'r2g2' with K > 1 are still refused.
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="unbiased for the ELBO"):
        tge.models.HierarchicalVAE(
            64, latent_gradient="r2g2", decoder_link_gradient="r2g2", importance_sample_size=3
        )


def test_cg_iterations_is_the_budget_of_the_r2g2_solves(binary_digits, monkeypatch):
    # The docstring's claim (issue 23 item 8): the option reaches R2-G2's solver, which uses
    # it when it solves by conjugate gradients; `None` means `hidden_units`.
    seen = []
    original = r2g2.gaussian_latent_dense
    monkeypatch.setattr(
        r2g2,
        "gaussian_latent_dense",
        lambda *a, **k: seen.append(k["cg_iterations"]) or original(*a, **k),
    )
    x = tf.constant(binary_digits[:4])
    _hvae(cg_iterations=3).compute_loss(x)
    _hvae().compute_loss(x)
    _hvae("reparameterization", cg_iterations=3).compute_loss(x)
    assert seen == [3, 3, 4, 4]  # two links each (latents 12 and 8 wider than 4 units)


def test_bad_arguments_are_named():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="latent_gradient.*Rec"):
        tge.models.HierarchicalVAE(64, latent_gradient="flipout")
    with pytest.raises(ValueError, match="decoder_link_gradient.*Received"):
        tge.models.HierarchicalVAE(64, decoder_link_gradient="flipout")
    with pytest.raises(TypeError, match="Received: gradient_estimator=3"):
        tge.models.HierarchicalVAE(64, gradient_estimator=3)
    # The estimator's own `validate`, at construction, names the fix.
    with pytest.raises(ValueError, match="importance_sample_size=1.*'iwae'"):
        tge.models.HierarchicalVAE(64, gradient_estimator="stl", importance_sample_size=4)
    with pytest.raises(ValueError, match="importance_sample_size.*Received"):
        tge.models.HierarchicalVAE(64, gradient_estimator="vimco")
    # R2-G2 Rao-Blackwellises a pathwise gradient: a score-function estimator is refused with
    # it, and named with the fix.
    with pytest.raises(ValueError, match="decoder_link_gradient='reparameterization' with it"):
        tge.models.HierarchicalVAE(
            64, gradient_estimator="score_function", decoder_link_gradient="r2g2"
        )
    tge.models.HierarchicalVAE(64, gradient_estimator="score_function")  # the default links
    # R2-G2 on the links is unbiased for the ELBO only: with K > 1 it is refused, not biased.
    with pytest.raises(ValueError, match="'reparameterization' for the importance-weighted.*=2"):
        tge.models.HierarchicalVAE(64, decoder_link_gradient="r2g2", importance_sample_size=2)
    assert tge.models.HierarchicalVAE(64, importance_sample_size=2).decoder_link_gradient == (
        "reparameterization"  # the default: no gain measured for R2-G2, and it costs more
    )
    with pytest.raises(ValueError, match="latent_dims.*Received"):
        tge.models.HierarchicalVAE(64, latent_dims=())
    with pytest.raises(ValueError, match="hidden_units.*Received"):
        tge.models.HierarchicalVAE(64, hidden_units=0)


def _old_log_weights(model, x, noises, decoder_link_gradient):
    """The log-weights as HierarchicalVAE computed them before issue 23 (its own formula, with
    R2-G2 through `gaussian_latent_dense` on the link): `[K, B]` from `[K * B, d_l]` noises."""
    count, batch = noises[0].shape[0] // x.shape[0], x.shape[0]
    flat_x = tf.reshape(tf.tile(x[tf.newaxis], [count, 1, 1]), [-1, model.num_pixels])

    def normal_log_prob(z, loc, scale):
        return tf.reduce_sum(
            -0.5 * tf.square((z - loc) / scale) - tf.math.log(scale) - 0.5 * math.log(2 * math.pi),
            axis=-1,
        )

    log_q, below, latents = 0.0, flat_x, []
    for level, noise in enumerate(noises):
        loc, scale = model._gaussian(model.encoders[level](below))
        z = loc + scale * noise
        log_q += normal_log_prob(z, loc, scale)
        latents.append((loc, scale, noise, z))
        below = z
    top = latents[-1][3]
    log_p = normal_log_prob(top, tf.zeros_like(top), tf.ones_like(top))
    for level, (loc, scale, noise, _) in enumerate(latents):
        link = model.decoder_links[level]
        if decoder_link_gradient == "r2g2":
            h = r2g2.gaussian_latent_dense(
                loc, scale, noise, link.kernel, link.bias, cg_iterations=model.hidden_units
            )
        else:
            h = link(loc + scale * noise)
        params = model.decoders[level](tf.tanh(h))
        if level == 0:
            log_p += tf.reduce_sum(tfp.distributions.Bernoulli(logits=params).log_prob(flat_x), -1)
        else:
            log_p += normal_log_prob(latents[level - 1][3], *model._gaussian(params))
    return tf.reshape(log_p - log_q, [count, batch])


@pytest.mark.parametrize("decoder_link_gradient", ["reparameterization", "r2g2"])
def test_on_the_same_noise_the_estimators_route_is_the_old_formula(
    binary_digits, decoder_link_gradient
):
    # Exact check (to float32 rounding): the target (decoder) and surrogate (encoder) that
    # the estimators see give the old implementation's log-weights, and the target's R2-G2
    # link (a zero-valued correction whose gradient reaches σ) the old R2-G2 gradient.
    k = 1 if decoder_link_gradient == "r2g2" else 3  # R2-G2 is for the ELBO only
    model = _hvae(decoder_link_gradient, importance_sample_size=k)
    x = tf.constant(binary_digits[:6])
    model(x)
    noises = model._noise(tf.constant([3, 4]), 0, k, 6, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        latents, below = [], x
        for level, noise in enumerate(noises):
            loc, scale = model.encoder_conditional(level, below)
            latents.append(loc + scale * tf.reshape(noise, [k, 6, -1]))
            below = latents[-1]
        new = model.target_log_prob_fn(x)(*latents) - model.surrogate_posterior(x).log_prob(latents)
        old = _old_log_weights(model, x, noises, decoder_link_gradient)
        losses = [-tf.reduce_mean(tf.reduce_logsumexp(w, axis=0)) for w in (new, old)]
    np.testing.assert_allclose(new, old, rtol=1e-5)
    np.testing.assert_allclose(new, model.log_weights(x, k, tf.constant([3, 4])), rtol=1e-5)
    new_grads, old_grads = (tape.gradient(loss, model.trainable_variables) for loss in losses)
    for a, b, v in zip(new_grads, old_grads, model.trainable_variables):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.max(np.abs(b)), err_msg=v.path)
    # Power: R2-G2 changes the gradient here (latents wider than the links), so a missing or
    # wrong correction would fail the comparison above.
    if decoder_link_gradient == "r2g2":
        with tf.GradientTape() as tape:
            plain = _old_log_weights(model, x, noises, "reparameterization")
            loss = -tf.reduce_mean(tf.reduce_logsumexp(plain, axis=0))
        plain_grads = tape.gradient(loss, model.trainable_variables)
        assert not all(np.allclose(a, b, rtol=1e-3) for a, b in zip(new_grads, plain_grads))


def _scale_gradient_draws(model, x, num_draws, route="estimator"):
    """Gradients of the loss w.r.t. the encoders' output layers (they produce the latents' σ),
    one per seed.

    `route="estimator"`: the training loss, `model.estimator.loss` on the model's target and
    surrogate (what `fit` differentiates). `route="direct"`: the old implementation's route,
    the log-weights of explicitly drawn noise differentiated through the log-mean-exp (the
    unchunked `log_likelihood_bound`, plain links).
    """
    model(x)
    variables = [v for e in model.encoders for v in e.layers[-1].trainable_variables]
    k = model.importance_sample_size

    @tf.function(jit_compile=True)
    def grad(seed):
        with tf.GradientTape() as tape:
            if route == "estimator":
                loss = tf.reduce_mean(
                    model.estimator.loss(
                        model.target_log_prob_fn(x), model.surrogate_posterior(x), 1, k, seed=seed
                    )
                )
            else:
                loss = -tf.reduce_mean(model.log_likelihood_bound(x, k, seed))
        return tape.gradient(loss, variables)

    draws = [grad(tf.constant([7, i])) for i in range(num_draws)]
    return [np.stack([d[j].numpy() for d in draws]) for j in range(len(variables))], variables


def _max_abs_two_sample_z(draws_a, draws_b):
    """Largest |difference of means| / its standard error sqrt(var_a/n + var_b/n), over elements."""
    worst = 0.0
    for a, b in zip(draws_a, draws_b):
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        z = np.abs(a.mean(0) - b.mean(0)) / np.maximum(se, 1e-12)
        worst = max(worst, float(np.max(z)))
    return worst


_STAT = {"latent_dims": (32, 32), "hidden_units": 8}  # latents 4x wider than the links


@pytest.fixture(scope="module")
def reparameterization_draws(binary_digits):
    # The old implementation's gradient: explicit noise, plain links, reparameterisation.
    return _scale_gradient_draws(
        _hvae("reparameterization", **_STAT), tf.constant(binary_digits[:8]), 200, "direct"
    )[0]


def test_r2g2_has_the_reparameterisation_mean_and_less_scale_variance(
    binary_digits, reparameterization_draws
):
    # Independent draws (different noise seeds per arm) on the same weights and data: under
    # equal means each element's z-score is ~N(0, 1); Z_THRESHOLD = 4 (conftest) on ~300
    # elements gives a ~2% false-alarm rate, and the seeds are fixed so the outcome repeats.
    # R2-G2 through the estimators' route (the default 'iwae' at K = 1, the ELBO).
    x = tf.constant(binary_digits[:8])
    n = 200
    rt = reparameterization_draws
    r2, _ = _scale_gradient_draws(_hvae("r2g2", **_STAT), x, n)
    assert _max_abs_two_sample_z(rt, r2) < Z_THRESHOLD
    # The top latent's σ: the second half of the top encoder's output bias. (The bottom
    # latent's σ gradient is dominated by its un-conditioned uses, log p(z_1 | z_2) and the
    # encoder above it, so its reduction is a few percent.)
    top_scale_var = {
        name: float(d[3][:, _STAT["latent_dims"][1] :].var(0, ddof=1).sum())
        for name, d in [("rt", rt), ("r2g2", r2)]
    }
    print(
        "top sigma-bias gradient variance RT / R2-G2:", top_scale_var["rt"] / top_scale_var["r2g2"]
    )
    # Each per-element variance estimate has relative standard error sqrt(2 / (n - 1)) ~ 10%,
    # less for the sum of 32; the measured ratio is ~0.63, so < 0.85 is > 3 SE from both.
    assert top_scale_var["r2g2"] < 0.85 * top_scale_var["rt"], top_scale_var


@pytest.mark.parametrize(
    "name,k,link", [("stl", 1, "r2g2"), ("iwae_dreg", 3, "reparameterization")]
)
def test_the_estimators_give_the_old_gradient_in_expectation(
    binary_digits, reparameterization_draws, name, k, link
):
    # Issue 23: the HVAE trained through `tge.estimators` has the old implementation's
    # expected gradient (STL is unbiased for the ELBO's, IWAE-DReG for the IWAE bound's), on
    # the same weights; the two-sample test and its threshold as above, and its power below.
    x = tf.constant(binary_digits[:8])
    n = 200
    model = _hvae(link, gradient_estimator=name, importance_sample_size=k, **_STAT)
    draws, _ = _scale_gradient_draws(model, x, n)
    if k == 1:
        reference = reparameterization_draws
    else:
        reference, _ = _scale_gradient_draws(
            _hvae("reparameterization", importance_sample_size=k, **_STAT), x, n, "direct"
        )
    assert _max_abs_two_sample_z(reference, draws) < Z_THRESHOLD


def test_power_the_mean_test_rejects_a_biased_scale_gradient(
    binary_digits, reparameterization_draws
):
    # The same test and sizes as above must FAIL for an estimator that drops the decoders'
    # contribution to the σ gradients.
    x = tf.constant(binary_digits[:8])
    n = 200
    rt = reparameterization_draws
    keras.utils.set_random_seed(0)
    wrong = _DetachedScaleHVAE(64, seed=0, decoder_link_gradient="reparameterization", **_STAT)
    biased, _ = _scale_gradient_draws(wrong, x, n)
    assert _max_abs_two_sample_z(rt, biased) > Z_THRESHOLD


# --- data, dtypes, arguments, the chunked bound, the backend (issue 21) --------------------


def test_validation_data_is_checked_once_per_fit_not_every_epoch(binary_digits, monkeypatch):
    from tfp_gradest.models import _data

    checked = []
    original = _data.check_bernoulli_data
    monkeypatch.setattr(
        _data, "check_bernoulli_data", lambda x, name="x": (checked.append(name), original(x, name))
    )
    model = _hvae()
    model.compile(optimizer="adam", jit_compile=False)
    x = binary_digits[:20]
    model.fit(x, validation_data=(x,), epochs=3, batch_size=10, verbose=0)
    assert sorted(checked) == ["validation_data", "x"]


@pytest.mark.parametrize("bad", [5.0, -0.5, np.nan])
def test_data_outside_the_unit_interval_is_refused_by_every_entry_point(binary_digits, bad):
    model = _hvae()
    model.compile(optimizer="adam", jit_compile=False)
    x = binary_digits[:20].copy()
    x[3, 7] = bad
    message = r"`x` must hold values in \[0, 1\] for a Bernoulli likelihood.*Received: x with"
    for call in (
        lambda: model.fit(x, epochs=1, batch_size=10, verbose=0),
        lambda: model.evaluate(x, verbose=0),
        lambda: model.train_on_batch(x),
        lambda: model.test_on_batch(tf.constant(x)),
        lambda: model.log_likelihood_bound(x, 2),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="`validation_data` must hold values in"):
        model.fit(binary_digits[:20], validation_data=(x,), epochs=1, verbose=0)
    # Probabilities in [0, 1] stay allowed.
    assert np.all(np.isfinite(model.log_likelihood_bound(np.full((3, 64), 0.3), 2)))


@pytest.mark.parametrize(
    "policy,data_dtype",
    [
        ("mixed_float16", "float32"),
        ("mixed_bfloat16", "float32"),
        ("float64", "float32"),
        ("float32", "uint8"),
    ],
)
def test_trains_under_mixed_policies_float64_and_integer_data(binary_digits, policy, data_dtype):
    model = _hvae(dtype=policy)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    x = binary_digits[:400].astype(data_dtype)
    losses = model.fit(x, epochs=3, batch_size=100, verbose=0).history["loss"]
    # Every step applied (a LossScaleOptimizer skips steps with non-finite gradients), and
    # the bound improves: float32 goes 46.8 -> 43.3 nats here, float64 46.6 -> 42.5.
    assert int(model.optimizer.iterations) == 12
    assert all(np.isfinite(losses)) and losses[-1] < 0.95 * losses[0], losses
    for data in (x[:5], x[:5].astype(bool)):
        bound = model.log_likelihood_bound(data, 3)
        assert bound.dtype == model.variable_dtype and np.all(np.isfinite(bound))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"latent_dims": "32"}, TypeError, r"latent_dims='32' \(str\).*not a string"),
        ({"latent_dims": (4.5,)}, TypeError, r"latent_dims=\(4\.5,\), whose item 0 is 4\.5"),
        ({"latent_dims": (4, 0)}, ValueError, r"item 1 is 0"),
        ({"latent_dims": 0}, ValueError, r"latent_dims=0"),
        ({"cg_iterations": 0}, ValueError, r"`cg_iterations` must be a positive integer.*None"),
        ({"cg_iterations": 2.5}, TypeError, r"cg_iterations=2\.5 \(float\)"),
        ({"hidden_units": 4.0}, TypeError, r"hidden_units=4\.0 \(float\)"),
        ({"importance_sample_size": "2"}, TypeError, r"importance_sample_size='2' \(str\)"),
        ({"seed": 1.5}, TypeError, r"`seed` must be an int or None"),
    ],
)
def test_bad_arguments_are_refused_not_truncated(kwargs, error, match):
    with pytest.raises(error, match=match):
        tge.models.HierarchicalVAE(64, **kwargs)


def test_an_int_latent_dims_is_one_level_and_numpy_integers_are_integers():
    model = tge.models.HierarchicalVAE(
        np.int64(64), latent_dims=5, hidden_units=np.int32(4), seed=np.int64(3)
    )
    assert model.latent_dims == (5,) and model.get_config()["latent_dims"] == [5]
    assert type(model.num_pixels) is int and type(model.seed) is int
    assert tge.models.HierarchicalVAE(64, latent_dims=[np.int64(6), 3]).latent_dims == (6, 3)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"importance_sample_size": 0}, ValueError, r"importance_sample_size=0 \(int\)"),
        ({"importance_sample_size": -1}, ValueError, r"importance_sample_size=-1"),
        ({"importance_sample_size": 2.5}, TypeError, r"importance_sample_size=2\.5 \(float\)"),
        ({"chunk_size": 0}, ValueError, r"chunk_size=0"),
        ({"seed": 2.5}, TypeError, r"`seed` must be an int\."),
    ],
)
def test_bad_bound_arguments_are_named(binary_digits, kwargs, error, match):
    model = _hvae()
    with pytest.raises(error, match=match):
        model.log_likelihood_bound(binary_digits[:4], **{"importance_sample_size": 2, **kwargs})


def test_the_bound_takes_numpy_integer_seeds_and_sizes(binary_digits):
    model = _hvae()
    x = binary_digits[:4]
    np.testing.assert_array_equal(
        model.log_likelihood_bound(x, np.int64(3), seed=np.int64(5)),
        model.log_likelihood_bound(x, 3, seed=5),
    )


@pytest.mark.parametrize("latent_gradient", ["r2g2", "reparameterization"])
def test_the_chunked_bound_equals_the_unchunked_one(binary_digits, latent_gradient):
    # Sample k is drawn from (seed, k) alone, so every chunking uses the same samples; the
    # log-mean-exp is combined in float64, so the float32 results agree exactly.
    model = _hvae(latent_gradient)
    x = binary_digits[:6]
    whole = model.log_likelihood_bound(x, 11, seed=4, chunk_size=11).numpy()
    for chunk_size in (3, 4, 10):  # 11 is a multiple of none of them
        np.testing.assert_array_equal(
            model.log_likelihood_bound(x, 11, seed=4, chunk_size=chunk_size), whole
        )
    # ... and equal the log-mean-exp of the model's own log-weights.
    log_w = model.log_weights(x, 11, tf.constant([0, 4], tf.int64)).numpy().astype(np.float64)
    expected = np.logaddexp.reduce(log_w, axis=0) - np.log(11)
    np.testing.assert_allclose(whole, expected, rtol=1e-6)
    # A different seed gives different samples (the comparison above has power).
    assert not np.array_equal(model.log_likelihood_bound(x, 11, seed=5, chunk_size=3), whole)


def test_a_large_bound_is_chunked_by_default(binary_digits):
    # K = 3000 at B = 8 is 24,000 rows: above BOUND_ROWS_PER_CHUNK, so evaluated in chunks.
    model = _hvae()
    x = binary_digits[:8]
    assert 3000 * 8 > tge.models.hierarchical_vae.BOUND_ROWS_PER_CHUNK
    bound = model.log_likelihood_bound(x, 3000, seed=1)
    # The default call compiled a chunked bound (one compiled function per (K, chunk))...
    assert [chunk for k, chunk in model._bound_functions if k == 3000] == [
        tge.models.hierarchical_vae.BOUND_ROWS_PER_CHUNK // 8
    ]
    # ... whose value is that of any other chunking.
    np.testing.assert_array_equal(bound, model.log_likelihood_bound(x, 3000, seed=1, chunk_size=7))
    assert np.all(np.isfinite(bound))


def test_other_keras_backends_are_refused_at_construction(monkeypatch):
    # TensorFlow and JAX are supported (tests/test_models_jax.py); PyTorch is not.
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(RuntimeError, match=r"HierarchicalVAE runs on the Keras backends.*'torch'"):
        tge.models.HierarchicalVAE(64)
