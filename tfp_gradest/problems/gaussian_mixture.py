"""A Gaussian mixture on a PCA projection of scikit-learn's digits, split into
minibatches (I-SAG)."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest.problems.base import DiagonalNormalSurrogate, Problem, register, tfp_module

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["GaussianMixture"]


@register("gaussian_mixture")
class GaussianMixture(DiagonalNormalSurrogate, Problem):
    """`C` unit-variance components with equal weights and unknown means, assignments summed out.

    ```none
    μ_c ~ N(0, s² I_D),   log p(x_n | θ) = logsumexp_c [log N(x_n; μ_c, I)] - log C
    log p_b(θ) = log p(θ) / B + Σ_{n ∈ batch b} log p(x_n | θ),   Σ_b log p_b(θ) = log p(x, θ)
    ```

    The data are the first `D` principal components of scikit-learn's 8×8 digits
    (bundled: nothing is downloaded), standardised, truncated to a multiple of
    `num_batches` and split into that many equal batches. `θ` is the flat
    vector of all `C·D` means; the surrogate is a mean-field Normal over it.
    `target_log_prob` is the full-data log joint; `batch_target_log_prob(θ, b)`
    is batch `b`'s share, the target `tge.reuse.fit(..., num_batches=B)` and
    `tge.reuse.ISAG` take. Used by `benchmarks/isag_gmm.py` and
    `colabs/isag_gmm.ipynb`. Runs on both TFP substrates (`--backend jax`: the
    full-data target).

    Args:
      num_components: Python `int`, `C`. Default value: `8`.
      dim: Python `int`, `D`, principal components kept. Default value: `4`.
      num_batches: Python `int`, `B`. Default value: `20`.
      prior_scale: `s`. Default value: `3.0`.
      initial_scale: the surrogate's initial standard deviation. Default value: `0.1`.
      seed: numpy seed for the surrogate's initial mean (standard normal). Default value: `0`.
    """

    substrates = ("tensorflow", "jax")

    def __init__(
        self, num_components=8, dim=4, num_batches=20, prior_scale=3.0, initial_scale=0.1, seed=0
    ):
        from sklearn.datasets import load_digits
        from sklearn.decomposition import PCA

        x = PCA(dim, random_state=0).fit_transform(load_digits().data)
        x = (x - x.mean(0)) / x.std(0)
        x = x[: (len(x) // num_batches) * num_batches].astype(np.float32)
        self.num_components, self.dim, self.num_batches = num_components, dim, num_batches
        self.prior_scale, self.initial_scale = prior_scale, initial_scale
        self._x = x
        self.x = tf.constant(x)
        self.batches = tf.constant(x.reshape(num_batches, -1, dim))
        size = num_components * dim
        start = np.random.default_rng(seed).normal(size=size).astype(np.float32)
        self.loc = tf.Variable(start, name="loc")
        self.scale = tfp.util.TransformedVariable(
            tf.fill([size], np.float32(initial_scale)), tfb.Softplus(), name="scale"
        )
        self.surrogate = tfd.MultivariateNormalDiag(self.loc, self.scale)

    def restart(self, loc):
        """Puts the surrogate back at mean `loc` and the initial scale (a new initialisation)."""
        self.loc.assign(loc)
        self.scale.assign(tf.fill(self.scale.shape, np.float32(self.initial_scale)))

    def log_prior(self, theta):
        return tf.reduce_sum(tfd.Normal(0.0, self.prior_scale).log_prob(theta), -1)

    def log_likelihood(self, points, theta):
        """`Σ_n log p(x_n | θ)` for `points [N, D]` and `theta [..., C·D]`; shape `[...]`."""
        means = tf.reshape(
            theta, tf.concat([tf.shape(theta)[:-1], [1, self.num_components, self.dim]], 0)
        )
        squared = tf.reduce_sum(tf.square(points[:, tf.newaxis, :] - means), -1)  # [..., N, C]
        per_point = (
            tf.reduce_logsumexp(-0.5 * squared, -1)
            - np.log(self.num_components)
            - 0.5 * self.dim * np.log(2 * np.pi)
        )
        return tf.reduce_sum(per_point, -1)

    def target_log_prob(self, theta):
        """The full-data log joint `log p(x, θ)`."""
        return self.log_prior(theta) + self.log_likelihood(self.x, theta)

    def batch_target_log_prob(self, theta, batch_index):
        """Batch `batch_index`'s share `log p_b(θ)`; the shares sum to `target_log_prob`."""
        batch = tf.gather(self.batches, batch_index)
        return self.log_prior(theta) / self.num_batches + self.log_likelihood(batch, theta)

    def _jax_target_log_prob_fn(self):
        import jax
        import jax.numpy as jnp

        tfd = tfp_module("jax").distributions
        points = self._x

        def target_log_prob(theta):
            prior = jnp.sum(tfd.Normal(0.0, self.prior_scale).log_prob(theta), -1)
            means = jnp.reshape(theta, theta.shape[:-1] + (1, self.num_components, self.dim))
            squared = jnp.sum(jnp.square(points[:, None, :] - means), -1)  # [..., N, C]
            per_point = (
                jax.nn.logsumexp(-0.5 * squared, -1)
                - np.log(self.num_components)
                - 0.5 * self.dim * np.log(2 * np.pi)
            )
            return prior + jnp.sum(per_point, -1)

        return target_log_prob

    def elbo(self, noise):
        """The full-data ELBO at fixed standard-normal `noise [M, C·D]` (common random numbers)."""
        theta = self.surrogate.loc + self.surrogate.scale.matvec(noise)
        return tf.reduce_mean(self.target_log_prob(theta)) + self.surrogate.entropy()
