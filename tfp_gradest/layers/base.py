"""Shared machinery of the Bayesian layers: a mean-field Normal posterior over the weights, its KL, noise."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest.r2g2 import conditioning as conditioning_lib
from tfp_gradest.r2g2 import gaussian_linear

tfd = tfp.distributions

__all__ = ["BayesianLayer", "GRADIENT_ESTIMATORS"]

GRADIENT_ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout", "r2g2")
_INFERENCE_MODES = ("sample", "mean")


def _inverse_softplus(x):
    return float(np.log(np.expm1(x)))


class BayesianLayer(keras.layers.Layer):
    """Base of the Bayesian layers: `q(W) = N(μ, diag σ²)`, `σ = softplus(ρ)`, prior `N(0, s²)`.

    Subclasses supply the linear map (`_linear_map`) and the shapes; this class
    owns the variables, the KL term (added with `add_loss`, analytic, times
    `kl_weight`), the noise (from a `keras.random.SeedGenerator`), and the
    dispatch over gradient estimators:

    * `"reparameterization"`: one weight sample per call, shared by the batch.
    * `"local_reparameterization"`: samples the pre-activations per example
      (Kingma et al. 2015); dense layers only.
    * `"flipout"`: pseudo-independent weights per example by random sign flips
      (Wen et al. 2018).
    * `"r2g2"`: the reparameterisation forward pass with the Rao-Blackwellised
      backward pass (Lam et al. 2024; `tfp_gradest.r2g2`).
    """

    supported_estimators = GRADIENT_ESTIMATORS

    def __init__(
        self,
        activation=None,
        use_bias=True,
        gradient_estimator="r2g2",
        kernel_loc_initializer="glorot_uniform",
        initial_posterior_scale=1e-2,
        prior_scale=1.0,
        kl_weight=1.0,
        conditioning="per_example",
        cg_iterations=50,
        cg_tolerance=1e-6,
        per_example_memory_limit=conditioning_lib.DEFAULT_PER_EXAMPLE_MEMORY_LIMIT,
        inference_mode="sample",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if gradient_estimator not in self.supported_estimators:
            raise ValueError(
                f"{type(self).__name__} supports gradient_estimator in {self.supported_estimators}. "
                f"Received: gradient_estimator={gradient_estimator!r}"
                + (
                    ". The local reparameterisation trick samples each output independently, "
                    "which is exact for dense layers only; for convolutions use 'flipout' or 'r2g2'."
                    if gradient_estimator == "local_reparameterization"
                    else ""
                )
            )
        if conditioning not in conditioning_lib.CONDITIONINGS:
            raise ValueError(
                f"`conditioning` must be one of {conditioning_lib.CONDITIONINGS}. Received: conditioning={conditioning!r}"
            )
        if inference_mode not in _INFERENCE_MODES:
            raise ValueError(
                f"`inference_mode` must be one of {_INFERENCE_MODES}. Received: inference_mode={inference_mode!r}"
            )
        for name, value in [
            ("initial_posterior_scale", initial_posterior_scale),
            ("prior_scale", prior_scale),
        ]:
            if not value > 0:
                raise ValueError(f"`{name}` must be positive. Received: {name}={value!r}")
        if kl_weight < 0:
            raise ValueError(f"`kl_weight` must be non-negative. Received: kl_weight={kl_weight!r}")
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.gradient_estimator = gradient_estimator
        # A fresh initializer per layer, even when the caller passed one instance to several layers.
        self.kernel_loc_initializer = keras.initializers.get(
            keras.initializers.serialize(keras.initializers.get(kernel_loc_initializer))
        )
        self.initial_posterior_scale = float(initial_posterior_scale)
        self.prior_scale, self.kl_weight = float(prior_scale), float(kl_weight)
        self.conditioning = conditioning
        self.cg_iterations, self.cg_tolerance = int(cg_iterations), float(cg_tolerance)
        self.per_example_memory_limit = (
            None if per_example_memory_limit is None else int(per_example_memory_limit)
        )
        self.inference_mode = inference_mode
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    # --- variables -------------------------------------------------------------------

    def _build_posterior(self, kernel_shape, units):
        raw = keras.initializers.Constant(_inverse_softplus(self.initial_posterior_scale))
        self.kernel_loc = self.add_weight(
            name="kernel_loc", shape=kernel_shape, initializer=self.kernel_loc_initializer
        )
        self.kernel_scale_raw = self.add_weight(
            name="kernel_scale_raw", shape=kernel_shape, initializer=raw
        )
        if self.use_bias:
            self.bias_loc = self.add_weight(name="bias_loc", shape=(units,), initializer="zeros")
            self.bias_scale_raw = self.add_weight(
                name="bias_scale_raw", shape=(units,), initializer=raw
            )

    def posterior_scales(self):
        """`(σ_kernel, σ_bias or None)`."""
        kernel = tf.nn.softplus(self.kernel_scale_raw)
        return kernel, (tf.nn.softplus(self.bias_scale_raw) if self.use_bias else None)

    def kl_divergence(self):
        """`KL(q || prior)` summed over all weights (analytic, Normal-Normal)."""
        kernel_scale, bias_scale = self.posterior_scales()
        prior = tfd.Normal(
            tf.zeros([], self.compute_dtype), tf.cast(self.prior_scale, self.compute_dtype)
        )
        kl = tf.reduce_sum(tfd.kl_divergence(tfd.Normal(self.kernel_loc, kernel_scale), prior))
        if self.use_bias:
            kl += tf.reduce_sum(tfd.kl_divergence(tfd.Normal(self.bias_loc, bias_scale), prior))
        return kl

    # --- forward ---------------------------------------------------------------------

    def _seed(self):
        return tf.cast(self.seed_generator.next(), tf.int32)

    # The seed state is the layer's Keras SeedGenerator; the draws use TF's stateless
    # Philox generator, which XLA compiles to fast code. (Measured on CPU under XLA for
    # 313,600 normals: keras.random.normal 150 ms, this 0.3 ms.)

    def _noise(self, shape, dtype):
        return tf.random.stateless_normal(shape, self._seed(), dtype=dtype, alg="philox")

    def _random_signs(self, shape, dtype):
        bits = tf.random.stateless_uniform(
            shape, self._seed(), minval=0, maxval=2, dtype=tf.int32, alg="philox"
        )
        return tf.cast(2 * bits - 1, dtype)

    def call(self, inputs, training=None):
        inputs = tf.convert_to_tensor(inputs, self.compute_dtype)
        linear_map = self._linear_map()
        kernel_loc = tf.convert_to_tensor(self.kernel_loc)
        bias_loc = tf.convert_to_tensor(self.bias_loc) if self.use_bias else None
        self.add_loss(self.kl_weight * self.kl_divergence())
        if not training and self.inference_mode == "mean":
            outputs = linear_map.apply(inputs, kernel_loc)
            outputs = outputs + bias_loc if self.use_bias else outputs
        else:
            outputs = self._sample_outputs(inputs, linear_map, kernel_loc, bias_loc)
        return self.activation(outputs) if self.activation is not None else outputs

    def _sample_outputs(self, inputs, linear_map, kernel_loc, bias_loc):
        kernel_scale, bias_scale = self.posterior_scales()
        dtype = inputs.dtype
        kernel_noise = self._noise(kernel_loc.shape, dtype)
        bias_noise = self._noise(bias_loc.shape, dtype) if self.use_bias else None
        estimator = self.gradient_estimator
        if estimator == "r2g2":
            return gaussian_linear(
                inputs,
                kernel_loc,
                kernel_scale,
                kernel_noise,
                linear_map,
                bias_loc,
                bias_scale,
                bias_noise,
                conditioning=self.conditioning,
                cg_iterations=self.cg_iterations,
                cg_tolerance=self.cg_tolerance,
                per_example_memory_limit=self.per_example_memory_limit,
            )
        bias = bias_loc + bias_scale * bias_noise if self.use_bias else 0.0
        if estimator == "reparameterization":
            return linear_map.apply(inputs, kernel_loc + kernel_scale * kernel_noise) + bias
        if estimator == "flipout":
            # Pseudo-independent per-example perturbations: sign flips on inputs and outputs.
            rank = inputs.shape.rank
            sign_in = self._random_signs(
                [tf.shape(inputs)[0]] + [1] * (rank - 2) + [inputs.shape[-1]], dtype
            )
            mean = linear_map.apply(inputs, kernel_loc)
            perturbation = linear_map.apply(inputs * sign_in, kernel_scale * kernel_noise)
            sign_out = self._random_signs(
                [tf.shape(inputs)[0]] + [1] * (rank - 2) + [mean.shape[-1]], dtype
            )
            return mean + perturbation * sign_out + bias
        # Local reparameterisation (dense): sample the pre-activations' marginal per example.
        mean = linear_map.apply(inputs, kernel_loc)
        variance = linear_map.apply(tf.square(inputs), tf.square(kernel_scale))
        if self.use_bias:
            mean, variance = mean + bias_loc, variance + tf.square(bias_scale)
        return mean + tf.sqrt(variance) * self._noise(tf.shape(mean), dtype)

    def get_config(self):
        config = {
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "gradient_estimator": self.gradient_estimator,
            "kernel_loc_initializer": keras.initializers.serialize(self.kernel_loc_initializer),
            "initial_posterior_scale": self.initial_posterior_scale,
            "prior_scale": self.prior_scale,
            "kl_weight": self.kl_weight,
            "conditioning": self.conditioning,
            "cg_iterations": self.cg_iterations,
            "cg_tolerance": self.cg_tolerance,
            "per_example_memory_limit": self.per_example_memory_limit,
            "inference_mode": self.inference_mode,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
