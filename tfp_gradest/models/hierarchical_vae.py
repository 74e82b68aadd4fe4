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

import functools
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest import _backend, r2g2
from tfp_gradest._util import arguments
from tfp_gradest.models import _data
from tfp_gradest.models._loss import mean_training_loss

tfd = tfp.distributions

__all__ = ["HierarchicalVAE"]

LATENT_GRADIENTS = ("r2g2", "reparameterization")

# `log_likelihood_bound` evaluates the `K` importance samples in chunks of about this many
# rows (`chunk × batch`) at a time: memory bounded whatever `K`, rows enough to keep
# the matmuls efficient.
BOUND_ROWS_PER_CHUNK = 4096

# Importance samples drawn one by one (unrolled) up to this many; beyond, in a loop.
_MAX_UNROLLED_DRAWS = 8


@keras.saving.register_keras_serializable(package="tfp_gradest")
class HierarchicalVAE(_data.BernoulliDataChecks, keras.Model):
    """A VAE with `len(latent_dims)` stochastic Gaussian layers, trained with `model.fit`.

    The loss is the negative ELBO (`importance_sample_size=1`, the paper's
    setting) or negative IWAE bound, averaged over the batch; `model.evaluate`
    reports it, and `log_likelihood_bound(x, K)` gives a tighter test bound.
    `latent_gradient` chooses the backward pass of the decoder links only; the
    loss value and the forward samples are identical for both choices.

    The data are binary (or probabilities) in [0, 1], of any dtype (`uint8`,
    `bool`, floats): `fit`, `evaluate`, `train_on_batch`, `test_on_batch` and
    `log_likelihood_bound` refuse in-memory data outside [0, 1] with a `ValueError`
    (checked once per call, before the compiled step; a `tf.data.Dataset` or a
    generator is not checked). The networks run in the model's compute dtype
    (`float16` under `mixed_float16`); the log-densities and bounds are computed
    in its variable dtype (`float32` under the mixed policies, `float64` for a
    float64 model). Runs on the Keras backend TensorFlow only; on another
    backend the constructor raises a `RuntimeError` naming it.

    Args:
      num_pixels: Python `int`, size of the flat binary input.
      latent_dims: sequence of Python `int`, bottom (next to `x`) to top; one
        `int` `d` means one stochastic layer, `(d,)`. Default value: `(32, 32)`.
      hidden_units: Python `int`, width of both hidden tanh layers of every
        conditional (200 in the paper). Default value: `16`.
      latent_gradient: `"r2g2"` or `"reparameterization"`. Default value: `"r2g2"`.
      importance_sample_size: Python `int` `K` for training. Default value: `1`.
      cg_iterations: Python `int`, R2-G2's conjugate-gradient budget per link
        (systems are `hidden_units × hidden_units`, so `hidden_units` iterations
        are exact in exact arithmetic); at least 1. Default value: `None`
        (= `hidden_units`).
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
        _backend.require_tensorflow_backend(type(self).__name__)
        super().__init__(**kwargs)
        if latent_gradient not in LATENT_GRADIENTS:
            raise ValueError(
                f"`latent_gradient` must be one of {LATENT_GRADIENTS}. "
                f"Received: latent_gradient={latent_gradient!r}"
            )
        self.latent_dims = arguments.check_integer_sequence(
            "latent_dims", latent_dims, allow_scalar=True
        )
        self.num_pixels = arguments.check_positive_integer("num_pixels", num_pixels)
        self.hidden_units = arguments.check_positive_integer("hidden_units", hidden_units)
        self.latent_gradient = latent_gradient
        self.importance_sample_size = arguments.check_positive_integer(
            "importance_sample_size", importance_sample_size
        )
        self.cg_iterations = (
            None
            if cg_iterations is None
            else arguments.check_positive_integer(
                "cg_iterations",
                cg_iterations,
                hint="Pass None for `hidden_units` iterations (exact in exact arithmetic).",
            )
        )
        self.seed = arguments.check_seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        latent_dims = self.latent_dims
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

    @property
    def _density_dtype(self):
        """The dtype of noise, log-densities and bounds: the variable dtype (float32 under the
        mixed policies, whose networks run in float16/bfloat16)."""
        return self.variable_dtype

    def _gaussian(self, params):
        loc, raw_scale = tf.split(tf.cast(params, self._density_dtype), 2, axis=-1)
        return loc, tf.nn.softplus(raw_scale) + 1e-5

    def _density_input(self, x):
        """`x` of any real or bool dtype as a Tensor of the density dtype (a cast, not a
        conversion: uint8 0/1 pixels are data too)."""
        return tf.cast(tf.convert_to_tensor(x), self._density_dtype)

    def decoder_input(self, level, loc, scale, noise):
        """`h = z W + b` of decoder `level`'s first layer, for `z = loc + scale * noise`.

        The only place `latent_gradient` acts: the forward value is the same for
        both choices; `"r2g2"` Rao-Blackwellises the gradient of `scale`.
        """
        link = self.decoder_links[level]
        if self.latent_gradient == "reparameterization":
            return link(loc + scale * noise)
        iterations = self.hidden_units if self.cg_iterations is None else self.cg_iterations
        return r2g2.gaussian_latent_dense(
            loc, scale, noise, link.kernel, link.bias, cg_iterations=iterations
        )

    def _noise(self, seed, first, count, batch, dtype):
        """The standard Normal draws of importance samples `first, ..., first + count - 1`:
        one `[count * batch, d_l]` Tensor per level, sample-major.

        Sample `k` of level `l` is `stateless_normal([batch, d_l], fold_in(seed_l, k))`, so a
        sample does not depend on how the `K` samples are grouped: the chunked bound uses
        exactly the samples of the unchunked one.
        """
        # Philox, as the layers' noise (`_backend.tensorflow`). (TensorFlow's XLA kernel turns
        # the same Philox bits into other Normal numbers: XLA and non-XLA runs differ.)
        level_seeds = tf.random.experimental.stateless_split(
            seed, len(self.latent_dims), alg="philox"
        )

        def draw(k):
            return [
                tf.random.stateless_normal(
                    [batch, dim],
                    tf.random.experimental.stateless_fold_in(level_seeds[level], k, alg="philox"),
                    dtype=dtype,
                    alg="philox",
                )
                for level, dim in enumerate(self.latent_dims)
            ]

        if count <= _MAX_UNROLLED_DRAWS:
            draws = [draw(first + i) for i in range(count)]
            return [tf.concat([d[level] for d in draws], 0) for level in range(len(draws[0]))]
        static_batch = batch if isinstance(batch, int) else None
        stacked = tf.map_fn(
            draw,
            first + tf.range(count),
            fn_output_signature=[tf.TensorSpec([static_batch, d], dtype) for d in self.latent_dims],
        )
        rows = -1 if static_batch is None else count * int(static_batch)
        return [tf.reshape(s, [rows, d]) for s, d in zip(stacked, self.latent_dims)]

    def _log_weights(self, x, first, count, seed):
        """`[count, B]` log-weights of importance samples `first, ...` (`x` in the density
        dtype)."""
        if not self.built:
            self.build((None, self.num_pixels))
        dtype = x.dtype
        batch = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        noises = self._noise(seed, first, count, batch, dtype)
        flat_x = tf.reshape(tf.tile(x[tf.newaxis], [count, 1, 1]), [-1, self.num_pixels])
        log_q = tf.zeros([count * batch], dtype)
        below, latents = flat_x, []
        for level in range(len(self.latent_dims)):
            loc, scale = self._gaussian(self.encoders[level](below))
            noise = noises[level]
            z = loc + scale * noise
            log_q += _normal_log_prob(z, loc, scale)
            latents.append((loc, scale, noise, z))
            below = z
        top = latents[-1][3]
        log_p = _normal_log_prob(top, tf.zeros_like(top), tf.ones_like(top))
        for level in range(len(self.latent_dims)):
            loc, scale, noise, _ = latents[level]
            hidden = tf.tanh(self.decoder_input(level, loc, scale, noise))
            params = tf.cast(self.decoders[level](hidden), dtype)
            if level == 0:
                log_p += tf.reduce_sum(
                    tfd.Bernoulli(logits=params, dtype=dtype).log_prob(flat_x), axis=-1
                )
            else:
                p_loc, p_scale = self._gaussian(params)
                log_p += _normal_log_prob(latents[level - 1][3], p_loc, p_scale)
        return tf.reshape(log_p - log_q, [count, batch])

    def log_weights(self, x, importance_sample_size, seed):
        """`log p(x, z) - log q(z | x)` for `K` joint draws per example: `[K, B]`, in the
        model's variable dtype."""
        return self._log_weights(self._density_input(x), 0, importance_sample_size, seed)

    def log_likelihood_bound(self, x, importance_sample_size=64, seed=0, chunk_size=None):
        """Per-example IWAE bound `log (1/K) Σ_k w_k ≤ log p(x)`: `[B]`.

        The `K` samples are evaluated `chunk_size` at a time, with a streaming
        log-mean-exp over the chunks (a running maximum and a float64 sum, in one
        `tf.while_loop`), so memory does not grow with `K`: a `K = 5000` bound over
        a test set fits. Sample `k` is drawn from `(seed, k)` alone, the same whatever
        the chunking, so the value is too (exactly, measured, without XLA; within
        float32 rounding under XLA, which also draws other Normal numbers from the same
        seed than TensorFlow's own kernels). Differentiable when unchunked
        (`chunk_size >= K`).

        Args:
          x: `[B, num_pixels]` data in [0, 1] (any real or bool dtype); in-memory data
            outside [0, 1] is a `ValueError`.
          importance_sample_size: Python `int` `K` ≥ 1. Default value: `64`.
          seed: Python or NumPy `int`, or a stateless seed (a `[2]` integer Tensor).
            Default value: `0`.
          chunk_size: Python `int`, importance samples per chunk, or `None`: about
            `BOUND_ROWS_PER_CHUNK / B` (all `K` at once when `B` is not static).
            Default value: `None`.
        """
        k = arguments.check_positive_integer("importance_sample_size", importance_sample_size)
        if chunk_size is not None:
            chunk_size = arguments.check_positive_integer("chunk_size", chunk_size)
        _data.check_bernoulli_data(x, "x")
        if tf.is_tensor(seed) or isinstance(seed, (np.ndarray, list, tuple)):
            seed = tf.convert_to_tensor(seed)
        else:
            seed = tf.constant([0, arguments.check_seed("seed", seed, allow_none=False)], tf.int64)
        x = self._density_input(x)
        batch = x.shape[0]
        if chunk_size is None:
            chunk_size = k if batch is None else max(1, BOUND_ROWS_PER_CHUNK // max(batch, 1))
        if not self.built:
            self.build((None, self.num_pixels))
        if not tf.executing_eagerly():
            return self._bound(x, k, chunk_size, seed)
        # Eagerly, through one compiled function, chunked or not (the same graph rewrites).
        # One function per (K, chunk) rather than one retraced for each: no retracing warnings.
        if "_bound_functions" not in self.__dict__:
            object.__setattr__(self, "_bound_functions", {})
        key = (k, min(chunk_size, k))
        if key not in self._bound_functions:
            self._bound_functions[key] = tf.function(
                functools.partial(self._bound, k=k, chunk=key[1])
            )
        return self._bound_functions[key](x, seed=seed)

    def _bound(self, x, k, chunk, seed):
        if chunk >= k:
            return _log_mean_exp(self._log_weights(x, 0, k, seed))
        num_chunks = -(-k // chunk)
        batch = tf.shape(x)[0]

        def body(j, running_max, total):
            first = j * chunk
            log_w = tf.cast(self._log_weights(x, first, chunk, seed), tf.float64)
            # The last chunk's samples beyond K are drawn and ignored (a static chunk shape).
            valid = (first + tf.range(chunk) < k)[:, tf.newaxis]
            log_w = tf.where(valid, log_w, tf.constant(-np.inf, tf.float64))
            new_max = tf.maximum(running_max, tf.reduce_max(log_w, axis=0))
            total = total * tf.exp(running_max - new_max) + tf.reduce_sum(
                tf.exp(log_w - new_max), axis=0
            )
            return j + 1, new_max, total

        _, log_max, total = tf.while_loop(
            lambda j, *_: j < num_chunks,
            body,
            (
                tf.constant(0),
                tf.fill([batch], tf.constant(-np.inf, tf.float64)),
                tf.zeros([batch], tf.float64),
            ),
            maximum_iterations=num_chunks,
        )
        return tf.cast(log_max + tf.math.log(total) - math.log(k), x.dtype)

    def call(self, x, training=False):
        """The posterior means of the bottom latents, `E_q[z_1 | x]`."""
        return self._gaussian(self.encoders[0](tf.cast(x, self.compute_dtype)))[0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del y, y_pred  # unsupervised: the loss is the negative bound on log p(x)
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        log_w = self._log_weights(self._density_input(x), 0, self.importance_sample_size, seed)
        # In the log-weights' own dtype: float64 per step would be slow on GPUs and is not
        # XLA's on TPUs. Only `log_likelihood_bound` combines in float64 (its chunks must
        # agree with the whole).
        log_mean_w = tf.reduce_logsumexp(log_w, axis=0) - math.log(self.importance_sample_size)
        return mean_training_loss(-log_mean_w, sample_weight, self.losses)

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


def _log_mean_exp(log_w):
    """`log (1/K) Σ_k exp(log_w[k])` over axis 0, combined in float64 (as the chunked bound)."""
    wide = tf.cast(log_w, tf.float64)
    log_max = tf.stop_gradient(tf.reduce_max(wide, axis=0))
    total = tf.reduce_sum(tf.exp(wide - log_max), axis=0)
    return tf.cast(log_max + tf.math.log(total) - math.log(log_w.shape[0]), log_w.dtype)


def _normal_log_prob(z, loc, scale):
    """Factorised Normal log-density summed over the last axis (differentiated in all arguments)."""
    standardized = (z - loc) / scale
    return tf.reduce_sum(
        -0.5 * tf.square(standardized) - tf.math.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1
    )
