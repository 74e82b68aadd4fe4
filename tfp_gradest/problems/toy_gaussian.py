"""The toy Gaussian of Rainforth et al. (2018) and Tucker et al. (2019, §6.1)."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest.problems.base import Problem, register, tfp_module

tfd = tfp.distributions

__all__ = ["ToyGaussian"]


@register("toy_gaussian")
class ToyGaussian(Problem):
    """`z ~ N(μ, I_D)`, `x | z ~ N(z, I_D)`, and `q(z | x) = N(a ⊙ x + b, σ_q² I_D)`.

    ```none
    p(z | x) = N((μ + x)/2, I/2),   log p(x) = log N(x; μ, 2 I)
    optimum of the IWAE bound (σ_q² = 2/3 fixed): a = 1/2, b = μ/2
    ```

    With `q_scale = sqrt(1/2)` the surrogate family contains the exact
    posterior, where every log-weight equals `log p(x)`.

    Variables: `a`, `b` (the surrogate's, `variables`) and `mu` (the model's,
    `model_variables`; it makes the target trainable, for testing that model
    parameters get the right gradient). Runs on both TFP substrates (`--backend jax`;
    there `μ` is a constant).

    Args:
      dim: Python `int`, `D`. Default value: `20`.
      perturbation: standard deviation of the Gaussian noise added to the
        optimal `a` and `b` (the papers use 0.01). Default value: `0.01`.
      q_scale: Python `float`, `σ_q`. Default value: `None`, meaning `sqrt(2/3)`.
      dtype: float dtype, a `tf.DType` or its name. Default value: `"float32"`.
      seed: numpy seed for `μ`, the observation `x ~ p(x)` and the perturbation.
        Default value: `0`.
    """

    default_estimators = ("iwae", "iwae_stl", "iwae_dreg")
    substrates = ("tensorflow", "jax")

    def __init__(self, dim=20, perturbation=0.01, q_scale=None, dtype="float32", seed=0):
        q_scale = np.sqrt(2.0 / 3.0) if q_scale is None else q_scale
        rng = np.random.default_rng(seed)
        np_dtype = tf.as_dtype(dtype).as_numpy_dtype
        self.dtype, self.dim = tf.as_dtype(dtype), dim
        self._np_dtype, self.q_scale = np_dtype, q_scale
        mu = rng.normal(size=dim)
        self.x = (mu + np.sqrt(2.0) * rng.normal(size=dim)).astype(np_dtype)
        self.mu = tf.Variable(mu.astype(np_dtype), name="mu")
        self.a = tf.Variable((0.5 + perturbation * rng.normal(size=dim)).astype(np_dtype), name="a")
        self.b = tf.Variable(
            (mu / 2 + perturbation * rng.normal(size=dim)).astype(np_dtype), name="b"
        )
        loc = tfp.util.DeferredTensor(self.b, lambda b: self.a * self.x + b)
        self.surrogate = tfd.MultivariateNormalDiag(loc, tf.fill([dim], tf.cast(q_scale, dtype)))

    @property
    def variables(self):
        return [self.a, self.b]

    @property
    def model_variables(self):
        return [self.mu]

    def target_log_prob(self, z):
        """`log p(x, z) = log N(z; μ, I) + log N(x; z, I)`, vectorised over leading axes."""
        prior = tfd.Normal(self.mu, tf.cast(1.0, self.dtype)).log_prob(z)
        likelihood = tfd.Normal(z, tf.cast(1.0, self.dtype)).log_prob(self.x)
        return tf.reduce_sum(prior + likelihood, axis=-1)

    def parameter_variables(self):
        return {"a": self.a, "b": self.b}

    def build_surrogate(self, parameters, tfp):
        loc = parameters["a"] * self.x + parameters["b"]
        scale = np.full([self.dim], self.q_scale, self._np_dtype)
        return tfp.distributions.MultivariateNormalDiag(loc, scale)

    def _normal(self, tfp, loc, scale):
        return tfp.distributions.Independent(
            tfp.distributions.Normal(loc, self._np_dtype(scale)), reinterpreted_batch_ndims=1
        )

    def _jax_target_log_prob_fn(self):
        tfp, mu = tfp_module("jax"), self.mu.numpy()
        return lambda z: (
            self._normal(tfp, mu, 1.0).log_prob(z) + self._normal(tfp, z, 1.0).log_prob(self.x)
        )

    def exact_objective_fn(self, substrate="tensorflow"):
        self.check_substrate(substrate)
        tfp, mu = tfp_module(substrate), self.mu.numpy()
        log_marginal = self._normal(tfp, mu, np.sqrt(2.0)).log_prob(self.x)
        posterior = tfp.distributions.MultivariateNormalDiag(
            (mu + self.x) / 2, np.full([self.dim], np.sqrt(0.5), self._np_dtype)
        )
        return lambda p: (
            log_marginal - tfp.distributions.kl_divergence(self.build_surrogate(p, tfp), posterior)
        )

    def posterior(self):
        """`p(z | x) = N((μ + x)/2, I/2)`."""
        return tfd.MultivariateNormalDiag(
            (self.mu + self.x) / 2, tf.fill([self.dim], tf.cast(np.sqrt(0.5), self.dtype))
        )

    def exact_objective(self):
        """The exact ELBO, `log p(x) - KL(q || p(z | x))` (the IWAE bound for K > 1 has no closed
        form)."""
        return self.log_marginal() - tfd.kl_divergence(self.surrogate, self.posterior())

    def distance_to_optimum(self):
        # One observation identifies only q's mean a⊙x + b, not a and b separately.
        gap = tf.reduce_max(tf.abs(self.surrogate.mean() - self.posterior().mean()))
        return f"max |E_q z - E_p(z|x) z| = {float(gap):.3g} (0 at the optimum)"

    def log_marginal(self):
        """`log p(x) = log N(x; μ, 2I)`."""
        return tf.reduce_sum(
            tfd.Normal(self.mu, tf.cast(np.sqrt(2.0), self.dtype)).log_prob(self.x)
        )
