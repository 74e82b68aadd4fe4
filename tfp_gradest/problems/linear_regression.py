"""Bayesian linear regression: a conjugate model whose posterior is known exactly."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest.problems.base import Problem, register, tfp_module

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["BayesianLinearRegression"]


@register("linear_regression")
class BayesianLinearRegression(Problem):
    """`w ~ N(0, α⁻¹ I)`, `y | X, w ~ N(X w, s² I)`, with a full-rank Normal surrogate.

    The posterior is `N(μ_N, Σ_N)` with `Σ_N⁻¹ = α I + XᵀX / s²` and
    `μ_N = Σ_N Xᵀ y / s²` (Bishop 2006, eq. 3.53-3.54), so `KL(q || posterior)`
    measures exactly how far a fitted surrogate is from the answer. The data are
    synthetic (seeded numpy), so nothing is downloaded. Runs on both TFP substrates
    (`--backend jax`).

    Args:
      num_features: Python `int`. Default value: `3`.
      num_examples: Python `int`. Default value: `20`.
      dtype: float dtype, a `tf.DType` or its name. Default value: `"float32"`.
      seed: numpy seed for the data. Default value: `0`.
    """

    fit_learning_rate = 0.05
    substrates = ("tensorflow", "jax")

    def __init__(self, num_features=3, num_examples=20, dtype="float32", seed=0):
        rng = np.random.default_rng(seed)
        np_dtype = tf.as_dtype(dtype).as_numpy_dtype
        self.prior_precision, self.noise_scale = 1.0, 1.0
        x = rng.normal(size=(num_examples, num_features))
        y = x @ rng.normal(size=num_features) + self.noise_scale * rng.normal(size=num_examples)
        precision = self.prior_precision * np.eye(num_features) + x.T @ x / self.noise_scale**2
        covariance = np.linalg.inv(precision)
        self.posterior = tfd.MultivariateNormalTriL(
            (covariance @ x.T @ y / self.noise_scale**2).astype(np_dtype),
            np.linalg.cholesky(covariance).astype(np_dtype),
        )
        self.x, self.y = x.astype(np_dtype), y.astype(np_dtype)
        self.loc = tf.Variable(np.zeros(num_features, np_dtype), name="loc")
        self.scale_tril = tfp.util.TransformedVariable(
            np.eye(num_features, dtype=np_dtype),
            tfb.FillScaleTriL(diag_shift=np_dtype(1e-5)),
            name="scale_tril",
        )
        self.surrogate = tfd.MultivariateNormalTriL(self.loc, self.scale_tril)

    def target_log_prob(self, w):
        """`log p(w) + log p(y | X, w)` for `w` of shape `[..., num_features]`."""
        dtype = w.dtype
        prior = tf.reduce_sum(
            tfd.Normal(tf.cast(0.0, dtype), tf.cast(self.prior_precision**-0.5, dtype)).log_prob(w),
            axis=-1,
        )
        mean = tf.einsum("nf,...f->...n", self.x, w)
        likelihood = tfd.Normal(mean, tf.cast(self.noise_scale, dtype)).log_prob(self.y)
        return prior + tf.reduce_sum(likelihood, axis=-1)

    def parameter_variables(self):
        return {"loc": self.loc, "scale_tril": self.scale_tril.pretransformed_input}

    def build_surrogate(self, parameters, tfp):
        bijector = tfp.bijectors.FillScaleTriL(diag_shift=self.x.dtype.type(1e-5))
        return tfp.distributions.MultivariateNormalTriL(
            parameters["loc"], bijector(parameters["scale_tril"])
        )

    def _jax_target_log_prob_fn(self):
        import jax.numpy as jnp

        tfd = tfp_module("jax").distributions

        def target_log_prob(w):
            prior = tfd.Normal(jnp.zeros([], w.dtype), self.prior_precision**-0.5).log_prob(w)
            mean = jnp.einsum("nf,...f->...n", self.x, w)
            likelihood = tfd.Normal(mean, jnp.asarray(self.noise_scale, w.dtype)).log_prob(self.y)
            return jnp.sum(prior, -1) + jnp.sum(likelihood, -1)

        return target_log_prob

    def kl_to_posterior(self):
        """`KL(q || exact posterior)`."""
        return tfd.kl_divergence(self.surrogate, self.posterior)

    def distance_to_optimum(self):
        # The full-rank family contains the exact posterior: the optimum is KL = 0.
        return f"KL(q || exact posterior) = {float(self.kl_to_posterior()):.3g} (0 at the optimum)"
