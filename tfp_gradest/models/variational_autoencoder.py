"""A VAE / IWAE as a Keras 3 model whose training gradient is any `tge` estimator."""

import keras
from keras import ops

from tfp_gradest._util import arguments
from tfp_gradest.models import _data, _estimator, _tfp
from tfp_gradest.models._loss import estimator_training_loss

__all__ = ["VariationalAutoencoder"]

_LIKELIHOODS = ("bernoulli", "normal")


@keras.saving.register_keras_serializable(package="tfp_gradest")
class VariationalAutoencoder(_data.BernoulliDataChecks, keras.Model):
    """A variational autoencoder trained with `model.fit` and any gradient estimator.

    The pattern, for any amortised model: the encoder returns the surrogate
    `q_φ(z | x)` as a TFP distribution with batch shape `[B]` (of TFP's substrate
    for the Keras backend: `tensorflow_probability` on TensorFlow,
    `tensorflow_probability.substrates.jax` on JAX); the decoder defines
    `log p_θ(x | z)`; `compute_loss` hands both to an estimator:

    ```none
    loss = mean_b  estimator.loss(z ↦ log p(z) + log p_θ(x_b | z),  q_φ(· | x_b),  S, K)
    ```

    With `"iwae_dreg"` the encoder receives the doubly-reparameterised gradient
    and the decoder the IWAE gradient (Tucker et al. 2019, appendix 8.3);
    encoder and decoder weights are separate here, and a weight shared by both
    would receive the sum of both roles.

    The loss value is the negative IWAE bound (ELBO for `K = 1`) whatever the
    estimator, so `model.evaluate` reports test bounds; the exception is the
    jackknife (`"jvi"`, `"jvi_dreg"`), whose value is the negative jackknife
    estimate of `log p(x)`, not a bound.

    Args:
      encoder: Keras layer or model, `x -> [B, 2 * latent_dim]`: the means and
        pre-softplus standard deviations of a diagonal Normal.
      decoder: Keras layer or model, `z -> [N] + event` for a flat batch of
        latents `[N, latent_dim]`: Bernoulli logits or Normal means (unit
        scale), depending on `likelihood`.
      latent_dim: Python `int` (or NumPy integer) ≥ 1; a float is refused, not truncated.
      gradient_estimator: the gradient estimator, anything
        `tge.estimators.get` accepts: a registered name (`"stl"`), a class, an
        instance with its options (`tge.estimators.DReG(alpha=0.3)`) or a config
        dict. Checked against `sample_size` and `importance_sample_size` at
        construction, by the estimator's own `validate`. `get_config` (and so a
        `.keras` file) keeps a name as the name and writes anything else as the
        estimator's config dict (`tge.estimators.serialize`). Default value:
        `"iwae_dreg"`.
      importance_sample_size: Python `int` `K`. Default value: `8`.
      sample_size: Python `int` `S`. Default value: `1`.
      likelihood: `"bernoulli"` or `"normal"`. With `"bernoulli"`, `fit`,
        `evaluate`, `train_on_batch` and `test_on_batch` refuse in-memory data
        with values outside [0, 1] (e.g. raw 0-255 pixels) with a `ValueError`,
        checked once per call before the compiled step; a `tf.data.Dataset` or
        a generator is not checked (check it where it is made). Default value:
        `"bernoulli"`.
      seed: Python `int` seed for the noise. Default value: `None`.

    Runs on the Keras backends TensorFlow and JAX (`keras.ops` and the backend's
    TFP substrate; on JAX, Keras differentiates the estimator's loss inside its
    stateless train step, and the seed is the `SeedGenerator`'s JAX key). A
    `.keras` file saved on one loads on the other. On another backend the
    constructor raises a `RuntimeError` naming it.

    #### Examples

    ```python
    encoder = keras.Sequential(
        [keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(2 * 4)]
    )
    decoder = keras.Sequential([keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(64)])
    vae = tge.models.VariationalAutoencoder(
        encoder, decoder, latent_dim=4, gradient_estimator="iwae_dreg", importance_sample_size=16
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(x_train, epochs=10, batch_size=64)
    ```
    """

    def __init__(
        self,
        encoder,
        decoder,
        latent_dim,
        gradient_estimator="iwae_dreg",
        importance_sample_size=8,
        sample_size=1,
        likelihood="bernoulli",
        seed=None,
        **kwargs,
    ):
        tfd = _tfp.tfd(type(self).__name__)
        super().__init__(**kwargs)
        if likelihood not in _LIKELIHOODS:
            raise ValueError(
                f"`likelihood` must be one of {_LIKELIHOODS}. Received: likelihood={likelihood!r}"
            )
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = arguments.check_positive_integer("latent_dim", latent_dim)
        self.estimator, self.gradient_estimator = _estimator.resolve(gradient_estimator)
        self.importance_sample_size = arguments.check_positive_integer(
            "importance_sample_size", importance_sample_size
        )
        self.sample_size = arguments.check_positive_integer("sample_size", sample_size)
        self.likelihood, self.seed = likelihood, arguments.check_seed("seed", seed)
        # Validate sizes now (a flat Normal stands in for the encoder's output).
        self.estimator.validate(tfd.Normal(0.0, 1.0), sample_size, importance_sample_size)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def _checks_bernoulli_data(self):
        return self.likelihood == "bernoulli"

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.decoder.build((None, self.latent_dim))
        self.built = True

    def surrogate_posterior(self, x):
        """`q_φ(z | x)`: a diagonal Normal with batch shape `[B]`."""
        params = self.encoder(x)
        loc, raw_scale = params[..., : self.latent_dim], params[..., self.latent_dim :]
        tfd = _tfp.tfd(type(self).__name__)
        return tfd.MultivariateNormalDiag(loc, ops.softplus(raw_scale) + 1e-5)

    def target_log_prob_fn(self, x):
        """`z ↦ log p(z) + log p_θ(x | z)`, vectorised over leading sample axes."""

        tfd = _tfp.tfd(type(self).__name__)

        def target_log_prob(z):
            prior = tfd.MultivariateNormalDiag(ops.zeros(self.latent_dim, z.dtype))
            # The decoder sees a flat batch [S*K*B, latent_dim], as it was built for.
            flat_output = self.decoder(ops.reshape(z, [-1, self.latent_dim]))
            output = ops.reshape(flat_output, (*ops.shape(z)[:-1], *ops.shape(flat_output)[1:]))
            if self.likelihood == "bernoulli":
                likelihood = tfd.Bernoulli(logits=output, dtype=output.dtype)
            else:
                likelihood = tfd.Normal(output, ops.ones((), output.dtype))
            return prior.log_prob(z) + tfd.Independent(likelihood, 1).log_prob(x)

        return target_log_prob

    def call(self, x, training=False):
        """The posterior means of the latents, `E_q[z | x]`."""
        return self.surrogate_posterior(x).mean()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del y, y_pred  # unsupervised: the loss is the negative bound on log p(x)
        return estimator_training_loss(self, x, sample_weight)

    def get_config(self):
        config = {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "latent_dim": self.latent_dim,
            "gradient_estimator": _estimator.config_value(self.gradient_estimator),
            "importance_sample_size": self.importance_sample_size,
            "sample_size": self.sample_size,
            "likelihood": self.likelihood,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)
