"""The VAE models on either Keras backend (issue 24, item 6).

Marked `backends`: the plain run checks them on TensorFlow, `KERAS_BACKEND=jax` on Keras's
JAX backend, where `compute_loss` runs inside Keras's stateless traced train step, the
surrogate is a `tensorflow_probability.substrates.jax` distribution of the encoder's traced
outputs, the seed is the `SeedGenerator`'s JAX key, and Keras differentiates the
estimator's loss. `.keras` files across backends: tests/test_keras_files.py.
"""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import tfp_gradest as tge
from tests import backend_utils as bu

pytestmark = pytest.mark.backends

NAMES = tge.estimators.names()
# Every registered estimator, the score function with its leave-one-out baseline (S = 2):
# with `b = 0` its ~44-nat advantages swamp a 10-step fit, on either backend.
ESTIMATORS = [
    tge.estimators.ScoreFunction("leave_one_out") if name == "score_function" else name
    for name in NAMES
]


@pytest.fixture(scope="module")
def binary_digits():
    """scikit-learn's bundled 8x8 digits, binarised: 1797 x 64, no download."""
    return (load_digits().data / 16.0 > 0.5).astype("float32")


def _sizes(name):
    """`(S, K)` for estimator `name` (any `tge.estimators.get` identifier): the smallest `S`
    it takes, and `K = 3` unless it estimates the ELBO (`K = 1`)."""
    estimator = tge.estimators.get(name)
    k = 1 if estimator.max_importance_sample_size == 1 else 3
    return estimator.min_sample_size, k


def _vae(name, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    s, k = _sizes(name)
    encoder = keras.Sequential([keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(4)])
    decoder = keras.Sequential([keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(64)])
    return tge.models.VariationalAutoencoder(
        encoder, decoder, 2, name, importance_sample_size=k, sample_size=s, seed=seed, **kwargs
    )


def _link(name):
    """R2-G2 links where they apply (a pathwise estimator of the ELBO), else plain ones."""
    estimator = tge.estimators.get(name)
    pathwise_elbo = estimator.requires_reparameterization and _sizes(name)[1] == 1
    return "r2g2" if pathwise_elbo else "reparameterization"


def _hvae(name, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    s, k = _sizes(name)
    # Latents wider than the links, so R2-G2 solves systems (not the injective shortcut).
    return tge.models.HierarchicalVAE(
        64,
        latent_dims=(6, 4),
        hidden_units=3,
        importance_sample_size=k,
        seed=seed,
        gradient_estimator=name,
        decoder_link_gradient=_link(name),
        sample_size=s,
        **kwargs,
    )


def _fit_losses(model, x):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    return model.fit(x, epochs=2, batch_size=40, verbose=0).history["loss"]


# test_vae.py fits these under XLA on TensorFlow already (larger, 3 epochs).
FITTED_BY_TEST_VAE = ("iwae", "iwae_dreg", "rws_dreg", "jvi_dreg", "stl")


@pytest.mark.parametrize("name", ESTIMATORS, ids=NAMES)
def test_the_vae_trains_with_every_estimator_under_xla(binary_digits, name):
    if bu.backend() == "tensorflow" and name in FITTED_BY_TEST_VAE:
        pytest.skip("fitted on TensorFlow by tests/test_vae.py")
    losses = _fit_losses(_vae(name), binary_digits[:160])
    assert np.all(np.isfinite(losses)), losses
    # 64 binary pixels start near 64 log 2 ~ 44 nats; the second epoch's mean is lower.
    assert losses[1] < losses[0] - 1.0, losses


# One per data path of `tfp_gradest._util.log_weights` (path-weighted, pathwise,
# separate terms, conditional path terms: GDReG with the model's `latent_distributions`),
# pathwise and score-function, both decoder links (R2-G2 for `stl`).
HVAE_ESTIMATORS = ["stl", "iwae_dreg", "jvi_dreg", "vimco", "gdreg"]


@pytest.mark.parametrize("name", HVAE_ESTIMATORS)
def test_the_hierarchical_vae_trains_under_xla(binary_digits, name):
    losses = _fit_losses(_hvae(name), binary_digits[:160])
    assert np.all(np.isfinite(losses)), losses
    assert losses[1] < losses[0] - 1.0, losses


def test_the_bound_reads_the_current_weights_and_any_chunking_gives_it(binary_digits):
    model = _hvae("iwae")
    x = binary_digits[:6]
    before = bu.to_numpy(model.log_likelihood_bound(x, 11, seed=4))
    for variable in model.trainable_variables:  # as training would
        variable.assign(variable + 0.1)
    # The compiled bound is cached per (K, chunk): it must see the new weights (a jitted
    # closure over the variables would keep the first call's).
    whole = bu.to_numpy(model.log_likelihood_bound(x, 11, seed=4))
    assert not np.allclose(whole, before, atol=1e-3)
    for chunk_size in (3, 4):  # 11 is a multiple of neither
        # The same samples; XLA (all of JAX) may round the looped program's float32 sums
        # differently (exact equality without XLA: tests/test_hvae.py).
        np.testing.assert_allclose(
            bu.to_numpy(model.log_likelihood_bound(x, 11, seed=4, chunk_size=chunk_size)),
            whole,
            rtol=1e-6,
        )
    # ... equal to the log-mean-exp of the model's own log-weights, drawn from the same seed.
    seed = 4 if bu.backend() == "jax" else np.array([0, 4], np.int64)
    log_w = np.asarray(bu.to_numpy(model.log_weights(x, 11, _bound_seed(seed))), np.float64)
    np.testing.assert_allclose(whole, np.logaddexp.reduce(log_w, 0) - np.log(11), rtol=1e-6)
    assert not np.array_equal(bu.to_numpy(model.log_likelihood_bound(x, 11, seed=5)), whole)


def _bound_seed(seed):
    from tfp_gradest.models import _bound

    return _bound.seed(seed)


def _other_backend_tfd():
    if bu.backend() == "jax":
        return pytest.importorskip("tensorflow_probability").distributions
    pytest.importorskip("jax")
    from tensorflow_probability.substrates import jax as tfp_jax

    return tfp_jax.distributions


def test_a_surrogate_of_the_other_substrate_is_refused(binary_digits):
    other_tfd = _other_backend_tfd()

    class OtherSubstrateVAE(tge.models.VariationalAutoencoder):
        def surrogate_posterior(self, x):
            params = bu.to_numpy(self.encoder(x))
            return other_tfd.MultivariateNormalDiag(params[..., :2], np.exp(params[..., 2:]))

    model = OtherSubstrateVAE(keras.layers.Dense(4), keras.layers.Dense(64), 2, "iwae")
    x = keras.ops.convert_to_tensor(binary_digits[:4])
    model(x)
    other = "tensorflow" if bu.backend() == "jax" else "jax"
    with pytest.raises(
        TypeError,
        match=rf"OtherSubstrateVAE.surrogate_posterior\(x\)` must return a distribution of "
        rf"TFP's substrate for the Keras backend '{bu.backend()}'.*one of TFP's '{other}' "
        r"substrate.*KERAS_BACKEND.*Received: surrogate_posterior=",
    ):
        model.compute_loss(x)
