"""Bayesian logistic regression on scikit-learn's bundled breast-cancer data (no download)."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest.problems.base import DiagonalNormalSurrogate, Problem, register, tfp_module

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["BayesianLogisticRegression"]


@register("logistic_regression")
class BayesianLogisticRegression(DiagonalNormalSurrogate, Problem):
    """`w ~ N(0, I)`, `y_n | x_n, w ~ Bernoulli(σ(x_nᵀ w))`, with a mean-field Normal surrogate.

    The data are scikit-learn's Wisconsin breast-cancer set (569 examples, 30
    features, shipped with the package), standardised, with a constant
    feature for the intercept, so `w` has 31 entries. There is no closed-form
    answer, so comparisons report variance and SNR but no bias. Runs on both TFP
    substrates (`--backend jax`).

    Args:
      num_examples: Python `int` or `None` (all 569). Default value: `None`.
      initial_scale: the surrogate's initial standard deviation. Default value: `0.1`.
      dtype: float dtype, a `tf.DType` or its name. Default value: `"float32"`.
      seed: numpy seed for the surrogate's initial mean. Default value: `0`.
    """

    substrates = ("tensorflow", "jax")

    def __init__(self, num_examples=None, initial_scale=0.1, dtype="float32", seed=0):
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        x, y = data.data[:num_examples], data.target[:num_examples]
        x = (x - x.mean(0)) / x.std(0)
        np_dtype = tf.as_dtype(dtype).as_numpy_dtype
        self.x = np.c_[x, np.ones(len(x))].astype(np_dtype)
        self.y = y.astype(np_dtype)
        rng = np.random.default_rng(seed)
        dim = self.x.shape[1]
        self.loc = tf.Variable((0.1 * rng.normal(size=dim)).astype(np_dtype), name="loc")
        self.scale = tfp.util.TransformedVariable(
            np.full(dim, initial_scale, np_dtype), tfb.Softplus(), name="scale"
        )
        self.surrogate = tfd.MultivariateNormalDiag(self.loc, self.scale)

    def target_log_prob(self, w):
        """`log p(w) + Σ_n log p(y_n | x_n, w)` for `w` of shape `[..., 31]`."""
        prior = tf.reduce_sum(tfd.Normal(tf.zeros([], w.dtype), 1.0).log_prob(w), axis=-1)
        logits = tf.einsum("nf,...f->...n", self.x, w)
        likelihood = tfd.Bernoulli(logits=logits, dtype=w.dtype).log_prob(self.y)
        return prior + tf.reduce_sum(likelihood, axis=-1)

    def _jax_target_log_prob_fn(self):
        import jax.numpy as jnp

        tfd = tfp_module("jax").distributions

        def target_log_prob(w):
            prior = tfd.Normal(jnp.zeros([], w.dtype), 1.0).log_prob(w)
            logits = jnp.einsum("nf,...f->...n", self.x, w)
            likelihood = tfd.Bernoulli(logits=logits, dtype=w.dtype).log_prob(self.y)
            return jnp.sum(prior, -1) + jnp.sum(likelihood, -1)

        return target_log_prob
