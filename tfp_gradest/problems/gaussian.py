"""A correlated Gaussian target with a mean-field Normal surrogate: the ELBO is closed form."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest.problems.base import DiagonalNormalSurrogate, Problem, register, tfp_module

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["CorrelatedGaussian"]


@register("gaussian")
class CorrelatedGaussian(DiagonalNormalSurrogate, Problem):
    """Target `p(z) = N(m, Σ)` (normalised) and surrogate `q(z) = N(μ, diag(σ²))`.

    ```none
    ELBO(μ, σ) = -KL(q || p)
               = -½ [tr(Σ⁻¹ diag σ²) + (μ - m)ᵀ Σ⁻¹ (μ - m) - D + log|Σ| - Σ_i log σ_i²]
    ```

    `exact_objective()` is that closed form (from `tfd.kl_divergence`), so its
    autodiff gradient is the exact ELBO gradient against which estimators are
    tested. The surrogate's variables are `loc` and the log of `scale`
    (a `tfp.util.TransformedVariable` with an `Exp` bijector). Runs on both TFP
    substrates (`--backend jax`): target, surrogate and closed form are written once.

    Args:
      dim: Python `int`, `D`. Default value: `3`.
      dtype: float dtype, a `tf.DType` or its name. Default value: `"float32"`.
      seed: numpy seed for the target's parameters. Default value: `0`.
      offset: how far the surrogate starts from the optimum, in units of the
        target's scale. Default value: `0.5`.
    """

    scale_bijector = "Exp"

    substrates = ("tensorflow", "jax")

    def __init__(self, dim=3, dtype="float32", seed=0, offset=0.5):
        rng = np.random.default_rng(seed)
        np_dtype = tf.as_dtype(dtype).as_numpy_dtype
        self.dtype = tf.as_dtype(dtype)
        mean = rng.normal(size=dim)
        a = rng.normal(size=(dim, dim))
        covariance = a @ a.T / dim + 0.5 * np.eye(dim)
        self._mean = mean.astype(np_dtype)
        self._scale_tril = np.linalg.cholesky(covariance).astype(np_dtype)
        self.target = self._target(tfp)
        std = np.sqrt(np.diag(covariance))
        self.loc = tf.Variable((mean + offset * std).astype(np_dtype), name="loc")
        self.scale = tfp.util.TransformedVariable(
            (std * np.exp(-offset)).astype(np_dtype), tfb.Exp(), name="scale"
        )
        self.surrogate = tfd.MultivariateNormalDiag(self.loc, self.scale)

    def _target(self, tfp):
        return tfp.distributions.MultivariateNormalTriL(self._mean, self._scale_tril)

    def target_log_prob(self, z):
        return self.target.log_prob(z)

    def target_log_prob_fn(self, substrate="tensorflow"):
        self.check_substrate(substrate)
        return self._target(tfp_module(substrate)).log_prob

    def exact_objective_fn(self, substrate="tensorflow"):
        self.check_substrate(substrate)
        tfp = tfp_module(substrate)
        target = self._target(tfp)
        return lambda p: -tfp.distributions.kl_divergence(self.build_surrogate(p, tfp), target)

    def exact_objective(self):
        """The exact ELBO, `-KL(q || p)`."""
        return -tfd.kl_divergence(self.surrogate, self.target)

    def distance_to_optimum(self):
        # The target is normalised, so -ELBO = KL(q || p); the mean-field optimum keeps a gap.
        return f"KL(q || p) = {float(-self.exact_objective()):.4g}"
