"""The amortised pattern: a VAE / IWAE trained with Keras 3 `model.fit` and any estimator."""

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


def _vae(estimator, k, seed=0):
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential(
        [keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(2 * 4)]
    )
    decoder = keras.Sequential([keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(64)])
    return tge.models.VariationalAutoencoder(
        encoder,
        decoder,
        latent_dim=4,
        gradient_estimator=estimator,
        importance_sample_size=k,
        seed=seed,
    )


@pytest.mark.parametrize(
    "estimator,k", [("iwae", 8), ("iwae_dreg", 8), ("rws_dreg", 8), ("jvi_dreg", 4), ("stl", 1)]
)
def test_trains_with_model_fit_under_xla(binary_digits, estimator, k):
    model = _vae(estimator, k)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
    history = model.fit(binary_digits[:1200], epochs=3, batch_size=100, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    # A bound on 64 binary pixels starts near 64 log 2 ~ 44 nats; it must fall well below.
    assert losses[-1] < 0.8 * losses[0], losses
    test_bound = -model.evaluate(binary_digits[1200:], verbose=0)
    assert np.isfinite(test_bound) and test_bound > -40.0


def test_decoder_gets_the_iwae_gradient_under_iwae_dreg(binary_digits):
    model = _vae("iwae_dreg", 8)
    x = tf.constant(binary_digits[:16])
    model(x)
    grads = {}
    for name in ["iwae", "iwae_dreg"]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tge.estimators.get(name).loss(
                    model.target_log_prob_fn(x), model.surrogate_posterior(x), 1, 8, seed=3
                )
            )
        grads[name] = tape.gradient(loss, model.decoder.trainable_variables)
    assert all(g is not None for g in grads["iwae_dreg"])
    for a, b in zip(grads["iwae"], grads["iwae_dreg"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_save_and_load_keep_the_posterior_means(binary_digits, tmp_path):
    model = _vae("iwae_dreg", 4)
    model.compile(optimizer="adam")
    model.fit(binary_digits[:200], epochs=1, batch_size=50, verbose=0)
    path = str(tmp_path / "vae.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.gradient_estimator == "iwae_dreg" and restored.importance_sample_size == 4
    np.testing.assert_array_equal(
        model.predict(binary_digits[:10], verbose=0),
        restored.predict(binary_digits[:10], verbose=0),
    )


def test_bad_arguments_are_named():
    encoder, decoder = keras.layers.Dense(8), keras.layers.Dense(64)
    with pytest.raises(ValueError, match="likelihood"):
        tge.models.VariationalAutoencoder(encoder, decoder, 4, likelihood="poisson")
    with pytest.raises(ValueError, match="importance_sample_size"):
        tge.models.VariationalAutoencoder(
            encoder, decoder, 4, gradient_estimator="vimco", importance_sample_size=1
        )
    with pytest.raises(TypeError, match="gradient_estimator.*Received: gradient_estimator=3"):
        tge.models.VariationalAutoencoder(encoder, decoder, 4, gradient_estimator=3)
    with pytest.raises(ValueError, match="Unknown gradient estimator 'stll'"):
        tge.models.VariationalAutoencoder(encoder, decoder, 4, gradient_estimator="stll")
    # An instance is checked by its own `validate`, at construction, naming the fix.
    with pytest.raises(ValueError, match="sample_size.*Received: sample_size=1"):
        tge.models.VariationalAutoencoder(
            encoder, decoder, 4, gradient_estimator=tge.estimators.ScoreFunction("leave_one_out")
        )


@pytest.mark.parametrize(
    "identifier,expected_config",
    [
        ("iwae_dreg", "iwae_dreg"),
        (tge.estimators.DReG(alpha=0.3), {"class_name": "DReG", "config": {"alpha": 0.3}}),
        (tge.estimators.IWAE, {"class_name": "IWAE", "config": {}}),
        (
            {"class_name": "dreg", "config": {"alpha": 0.3}},
            {"class_name": "DReG", "config": {"alpha": 0.3}},
        ),
    ],
    ids=["name", "instance", "class", "config"],
)
def test_any_estimator_identifier_is_taken_and_saved(
    binary_digits, tmp_path, identifier, expected_config
):
    # Issue 23: the model refused estimator instances (which `tge.vi` accepts).
    model = _vae(identifier, 2)
    assert model.estimator == tge.estimators.get(identifier)
    assert model.get_config()["gradient_estimator"] == expected_config
    model.compile(optimizer="adam", jit_compile=False)
    model.fit(binary_digits[:20], epochs=1, batch_size=10, verbose=0)
    path = str(tmp_path / "vae.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    # A name stays a name; an instance (or class, or config) comes back as an equal instance.
    assert restored.get_config()["gradient_estimator"] == expected_config
    assert restored.estimator == model.estimator
    assert type(restored.estimator) is type(model.estimator)


# --- data, arguments, backend (issue 21) ---------------------------------------------------


def test_raw_pixels_are_refused_for_a_bernoulli_likelihood(binary_digits):
    model = _vae("iwae", 2)
    model.compile(optimizer="adam", jit_compile=False)
    raw = (binary_digits[:40] * 255).astype("uint8")  # raw 0-255 pixels
    message = r"`x` must hold values in \[0, 1\].*values in \[0, 255\] \(dtype uint8\).*x / 255"
    for call in (
        lambda: model.fit(raw, epochs=1, batch_size=20, verbose=0),
        lambda: model.fit(x=tf.constant(raw), epochs=1, verbose=0),
        lambda: model.evaluate(raw, verbose=0),
        lambda: model.train_on_batch(raw),
        lambda: model.test_on_batch(raw),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="`validation_data` must hold values in"):
        model.fit(binary_digits[:40], validation_data=raw, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0  # refused before any step


def test_probabilities_and_a_normal_likelihood_are_not_refused(binary_digits):
    model = _vae("iwae", 2)
    model.compile(optimizer="adam", jit_compile=False)
    assert np.isfinite(model.train_on_batch(np.full((8, 64), 0.25, "float32")))
    encoder, decoder = keras.layers.Dense(8), keras.layers.Dense(64)
    normal = tge.models.VariationalAutoencoder(encoder, decoder, 4, likelihood="normal")
    normal.compile(optimizer="adam", jit_compile=False)
    normal.fit(binary_digits[:8] * 255, epochs=0, verbose=0)  # checked, accepted, no step


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"latent_dim": 0}, ValueError, r"`latent_dim` must be a positive integer.*latent_dim=0"),
        ({"latent_dim": -2}, ValueError, r"latent_dim=-2 \(int\)"),
        ({"latent_dim": 2.5}, TypeError, r"latent_dim=2\.5 \(float\).*not rounded"),
        ({"latent_dim": "4"}, TypeError, r"latent_dim='4' \(str\)"),
        ({"importance_sample_size": 2.5}, TypeError, r"importance_sample_size=2\.5"),
        ({"sample_size": 0}, ValueError, r"sample_size=0"),
        ({"seed": 1.5}, TypeError, r"`seed` must be an int or None"),
    ],
)
def test_bad_arguments_are_refused_not_truncated(kwargs, error, match):
    encoder, decoder = keras.layers.Dense(8), keras.layers.Dense(64)
    with pytest.raises(error, match=match):
        tge.models.VariationalAutoencoder(encoder, decoder, **{"latent_dim": 4, **kwargs})


def test_numpy_integers_are_integers():
    encoder, decoder = keras.layers.Dense(8), keras.layers.Dense(64)
    model = tge.models.VariationalAutoencoder(
        encoder, decoder, np.int64(4), importance_sample_size=np.int32(3), seed=np.int64(2)
    )
    config = model.get_config()
    assert (config["latent_dim"], config["importance_sample_size"], config["seed"]) == (4, 3, 2)
    assert all(type(config[k]) is int for k in ("latent_dim", "importance_sample_size", "seed"))


def test_other_keras_backends_are_refused_at_construction(monkeypatch):
    # TensorFlow and JAX are supported (tests/test_models_jax.py); PyTorch is not.
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(
        RuntimeError, match=r"VariationalAutoencoder runs on the Keras backends.*'torch'"
    ):
        tge.models.VariationalAutoencoder(keras.layers.Dense(8), keras.layers.Dense(64), 4)
