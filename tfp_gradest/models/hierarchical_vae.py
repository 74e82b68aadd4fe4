"""A hierarchical VAE (several stochastic Gaussian layers) with R2-G2 on each decoder link.

The model of Lam et al. (2024), Figure 2 (after Burda et al., 2016): `L`
stochastic layers `z_1, …, z_L`, every conditional a factorised Gaussian whose
mean and standard deviation come from an MLP with two hidden tanh layers, a
standard Normal prior on the top layer and a Bernoulli likelihood:

```none
q(z_1 | x) q(z_2 | z_1) … q(z_L | z_{L-1})                       (encoder, bottom-up)
p(z_L) p(z_{L-1} | z_L) … p(z_1 | z_2) p(x | z_1)                 (decoder, top-down)
log w = log p(x, z_{1:L}) - log q(z_{1:L} | x),   z_l = μ_l + σ_l ⊙ ε_l
bound = log (1/K) Σ_k w_k                        (ELBO for K = 1, IWAE bound for K > 1)
```

Each decoder conditional sees its latent only through its first dense layer,
`h = z_l W + b` (a "latent-into-dense link"). With `latent_gradient="r2g2"` that
link is `tge.r2g2.gaussian_latent_dense`: the same forward sample, and the
gradient of `σ_l` Rao-Blackwellised over `ε_l | h`. It is unbiased because the
gradient reaching `h` depends on `ε_l` only through `h`: it is a function of
`h`, of `x` and of the lower latents `z_{<l}`, which were drawn before `ε_l`
and are independent of it. (The encoder's link `z_l ↦ q(z_{level+1} | z_l)` is left
alone: through `log p(z_l | z_{level+1})` its gradient also depends on `z_l`
directly, so conditioning on that link's `h` alone would bias it.)

R2-G2 differs from the reparameterisation gradient only where the latent is
wider than the first decoder layer (`latent_dims[level] > hidden_units`);
otherwise `h` determines `ε_l` and the two are equal.
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest import r2g2
from tfp_gradest.models._loss import mean_training_loss

tfd = tfp.distributions

__all__ = ["HierarchicalVAE"]

LATENT_GRADIENTS = ("r2g2", "reparameterization")


@keras.saving.register_keras_serializable(package="tfp_gradest")
class HierarchicalVAE(keras.Model):
    """A VAE with `len(latent_dims)` stochastic Gaussian layers, trained with `model.fit`.

    The loss is the negative ELBO (`importance_sample_size=1`, the paper's
    setting) or negative IWAE bound, averaged over the batch; `model.evaluate`
    reports it, and `log_likelihood_bound(x, K)` gives a tighter test bound.
    `latent_gradient` chooses the backward pass of the decoder links only; the
    loss value and the forward samples are identical for both choices.

    Args:
      num_pixels: Python `int`, size of the flat binary input.
      latent_dims: sequence of Python `int`, bottom (next to `x`) to top.
        Default value: `(32, 32)`.
      hidden_units: Python `int`, width of both hidden tanh layers of every
        conditional (200 in the paper). Default value: `16`.
      latent_gradient: `"r2g2"` or `"reparameterization"`. Default value: `"r2g2"`.
      importance_sample_size: Python `int` `K` for training. Default value: `1`.
      cg_iterations: Python `int`, R2-G2's conjugate-gradient budget per link
        (systems are `hidden_units × hidden_units`, so `hidden_units` iterations
        are exact in exact arithmetic). Default value: `None` (= `hidden_units`).
      seed: Python `int` seed for the noise. Default value: `None`.

    #### Examples

    ```python
    x_train = (x_train > 0.5).astype("float32")  # or resample each epoch (dynamic binarisation)
    model = tge.models.HierarchicalVAE(64, latent_dims=(32, 32, 32), hidden_units=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    model.fit(x_train, epochs=10, batch_size=64)
    test_bound = model.log_likelihood_bound(x_test, importance_sample_size=256)
    ```

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    [2] Burda, Grosse & Salakhutdinov. Importance Weighted Autoencoders. 2016.
        https://arxiv.org/abs/1509.00519
    """

    def __init__(
        self,
        num_pixels,
        latent_dims=(32, 32),
        hidden_units=16,
        latent_gradient="r2g2",
        importance_sample_size=1,
        cg_iterations=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if latent_gradient not in LATENT_GRADIENTS:
            raise ValueError(
                f"`latent_gradient` must be one of {LATENT_GRADIENTS}. "
                f"Received: latent_gradient={latent_gradient!r}"
            )
        latent_dims = tuple(int(d) for d in latent_dims)
        if not latent_dims or min(latent_dims) < 1:
            raise ValueError(
                "`latent_dims` must be a non-empty sequence of positive sizes, bottom to top. "
                f"Received: latent_dims={latent_dims!r}"
            )
        for name, value in [
            ("num_pixels", num_pixels),
            ("hidden_units", hidden_units),
            ("importance_sample_size", importance_sample_size),
        ]:
            if int(value) != value or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        self.num_pixels, self.latent_dims = int(num_pixels), latent_dims
        self.hidden_units, self.latent_gradient = int(hidden_units), latent_gradient
        self.importance_sample_size = int(importance_sample_size)
        self.cg_iterations = cg_iterations
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        dims = (self.num_pixels, *latent_dims)
        # encoders[l]: z_l -> (μ, σ) of z_{l+1} (z_0 = x); decoders[l]: z_{l+1} -> params of z_l.
        self.encoders = [
            self._mlp(2 * dims[level + 1], f"encoder_{level + 1}")
            for level in range(len(latent_dims))
        ]
        self.decoder_links, self.decoders = [], []
        for level in range(len(latent_dims)):
            self.decoder_links.append(
                keras.layers.Dense(
                    self.hidden_units, name=f"decoder_{level}_link", dtype=self.dtype_policy
                )
            )
            out = dims[0] if level == 0 else 2 * dims[level]
            self.decoders.append(self._mlp(out, f"decoder_{level}", num_hidden=1))

    def _mlp(self, outputs, name, num_hidden=2):
        layers = [
            keras.layers.Dense(self.hidden_units, activation="tanh", dtype=self.dtype_policy)
            for _ in range(num_hidden)
        ]
        return keras.Sequential(
            [*layers, keras.layers.Dense(outputs, dtype=self.dtype_policy)], name=name
        )

    def build(self, input_shape):
        dims = (self.num_pixels, *self.latent_dims)
        for level in range(len(self.latent_dims)):
            self.encoders[level].build((None, dims[level]))
            self.decoder_links[level].build((None, dims[level + 1]))
            # The link's output goes through tanh: the first hidden layer of the conditional.
            self.decoders[level].build((None, self.hidden_units))
        self.built = True

    # -- the model's pieces ------------------------------------------------------------

    @staticmethod
    def _gaussian(params):
        loc, raw_scale = tf.split(params, 2, axis=-1)
        return loc, tf.nn.softplus(raw_scale) + 1e-5

    def decoder_input(self, level, loc, scale, noise):
        """`h = z W + b` of decoder `level`'s first layer, for `z = loc + scale * noise`.

        The only place `latent_gradient` acts: the forward value is the same for
        both choices; `"r2g2"` Rao-Blackwellises the gradient of `scale`.
        """
        link = self.decoder_links[level]
        if self.latent_gradient == "reparameterization":
            return link(loc + scale * noise)
        iterations = self.cg_iterations or self.hidden_units
        return r2g2.gaussian_latent_dense(
            loc, scale, noise, link.kernel, link.bias, cg_iterations=iterations
        )

    def log_weights(self, x, importance_sample_size, seed):
        """`log p(x, z) - log q(z | x)` for `K` joint draws per example: `[K, B]`."""
        if not self.built:
            self.build((None, self.num_pixels))
        x = tf.convert_to_tensor(x, self.compute_dtype)
        batch = tf.shape(x)[0]
        k = importance_sample_size
        flat_x = tf.reshape(tf.tile(x[tf.newaxis], [k, 1, 1]), [-1, self.num_pixels])
        seeds = tf.random.experimental.stateless_split(seed, len(self.latent_dims))
        log_q = tf.zeros([k * batch], x.dtype)
        below, latents = flat_x, []
        for level in range(len(self.latent_dims)):
            loc, scale = self._gaussian(self.encoders[level](below))
            noise = tf.random.stateless_normal(tf.shape(loc), seeds[level], dtype=x.dtype)
            z = loc + scale * noise
            log_q += _normal_log_prob(z, loc, scale)
            latents.append((loc, scale, noise, z))
            below = z
        top = latents[-1][3]
        log_p = _normal_log_prob(top, tf.zeros_like(top), tf.ones_like(top))
        for level in range(len(self.latent_dims)):
            loc, scale, noise, _ = latents[level]
            params = self.decoders[level](tf.tanh(self.decoder_input(level, loc, scale, noise)))
            if level == 0:
                log_p += tf.reduce_sum(
                    tfd.Bernoulli(logits=params, dtype=params.dtype).log_prob(flat_x), axis=-1
                )
            else:
                p_loc, p_scale = self._gaussian(params)
                log_p += _normal_log_prob(latents[level - 1][3], p_loc, p_scale)
        return tf.reshape(log_p - log_q, [k, batch])

    def log_likelihood_bound(self, x, importance_sample_size=64, seed=0):
        """Per-example IWAE bound `log (1/K) Σ_k w_k ≤ log p(x)`: `[B]`."""
        seed = tf.constant([0, seed], tf.int32) if isinstance(seed, int) else seed
        log_w = self.log_weights(x, importance_sample_size, seed)
        return tf.reduce_logsumexp(log_w, axis=0) - math.log(importance_sample_size)

    def call(self, x, training=False):
        """The posterior means of the bottom latents, `E_q[z_1 | x]`."""
        return self._gaussian(self.encoders[0](x))[0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del y, y_pred  # unsupervised: the loss is the negative bound on log p(x)
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        per_example = -self.log_likelihood_bound(x, self.importance_sample_size, seed)
        return mean_training_loss(per_example, sample_weight, self.losses)

    def get_config(self):
        config = {
            "num_pixels": self.num_pixels,
            "latent_dims": list(self.latent_dims),
            "hidden_units": self.hidden_units,
            "latent_gradient": self.latent_gradient,
            "importance_sample_size": self.importance_sample_size,
            "cg_iterations": self.cg_iterations,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


def _normal_log_prob(z, loc, scale):
    """Factorised Normal log-density summed over the last axis (differentiated in all arguments)."""
    standardized = (z - loc) / scale
    return tf.reduce_sum(
        -0.5 * tf.square(standardized) - tf.math.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1
    )
