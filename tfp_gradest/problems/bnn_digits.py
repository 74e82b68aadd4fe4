"""A Bayesian neural network on scikit-learn's bundled 8×8 digits (no download)."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest.problems.base import DiagonalNormalSurrogate, Problem, register, tfp_module

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["BayesianNeuralNetworkDigits"]


@register("bnn_digits")
class BayesianNeuralNetworkDigits(DiagonalNormalSurrogate, Problem):
    """A 64-`hidden`-10 tanh MLP with `w ~ N(0, I)` and a mean-field Normal surrogate over all
    weights.

    ```none
    log p(w, y | X) = Σ log N(w; 0, 1) + Σ_n log Categorical(y_n; softmax(f_w(x_n)))
    ```

    All weights and biases are one flat vector (`64·h + h + 10·h + 10`
    entries), so any estimator of this package applies; samples with leading
    axes are evaluated in one batched einsum. The surrogate's mean starts at a
    Glorot-scaled random point and its scale at `initial_scale`. No closed
    form: comparisons report variance and SNR but no bias. Runs on both TFP substrates
    (`--backend jax`).

    Args:
      hidden: Python `int`, hidden units. Default value: `16`.
      num_examples: Python `int`, digits used (the first ones). Default value: `256`.
      initial_scale: the surrogate's initial standard deviation. Default value: `0.05`.
      dtype: float dtype, a `tf.DType` or its name. Default value: `"float32"`.
      seed: numpy seed for the initial mean. Default value: `0`.
    """

    substrates = ("tensorflow", "jax")

    def __init__(self, hidden=16, num_examples=256, initial_scale=0.05, dtype="float32", seed=0):
        from sklearn.datasets import load_digits

        data = load_digits()
        np_dtype = tf.as_dtype(dtype).as_numpy_dtype
        self.x = (data.data[:num_examples] / 16.0).astype(np_dtype)
        self.y = data.target[:num_examples].astype(np.int32)
        self.shapes = [(64, hidden), (hidden,), (hidden, 10), (10,)]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        rng = np.random.default_rng(seed)
        init = np.concatenate(
            [
                rng.normal(size=size) * (np.sqrt(2.0 / sum(shape)) if len(shape) == 2 else 0.0)
                for shape, size in zip(self.shapes, self.sizes)
            ]
        )
        self.loc = tf.Variable(init.astype(np_dtype), name="loc")
        self.scale = tfp.util.TransformedVariable(
            np.full(sum(self.sizes), initial_scale, np_dtype), tfb.Softplus(), name="scale"
        )
        self.surrogate = tfd.MultivariateNormalDiag(self.loc, self.scale)

    def unpack(self, w):
        """Flat `[..., W]` -> `(W1 [..., 64, h], b1, W2 [..., h, 10], b2)`."""
        parts = tf.split(w, self.sizes, axis=-1)
        batch = tf.shape(w)[:-1]
        return [tf.reshape(p, tf.concat([batch, s], 0)) for p, s in zip(parts, self.shapes)]

    def target_log_prob(self, w):
        w1, b1, w2, b2 = self.unpack(w)
        hidden = tf.tanh(tf.einsum("ni,...ih->...nh", self.x, w1) + b1[..., tf.newaxis, :])
        logits = tf.einsum("...nh,...ho->...no", hidden, w2) + b2[..., tf.newaxis, :]
        prior = tf.reduce_sum(tfd.Normal(tf.zeros([], w.dtype), 1.0).log_prob(w), axis=-1)
        likelihood = tfd.Categorical(logits=logits).log_prob(self.y)
        return prior + tf.reduce_sum(likelihood, axis=-1)

    def _jax_target_log_prob_fn(self):
        import jax.numpy as jnp

        tfd = tfp_module("jax").distributions

        def target_log_prob(w):
            parts = jnp.split(w, np.cumsum(self.sizes)[:-1], axis=-1)
            w1, b1, w2, b2 = [p.reshape(w.shape[:-1] + s) for p, s in zip(parts, self.shapes)]
            hidden = jnp.tanh(jnp.einsum("ni,...ih->...nh", self.x, w1) + b1[..., None, :])
            logits = jnp.einsum("...nh,...ho->...no", hidden, w2) + b2[..., None, :]
            prior = jnp.sum(tfd.Normal(jnp.zeros([], w.dtype), 1.0).log_prob(w), -1)
            likelihood = tfd.Categorical(logits=logits).log_prob(self.y)
            return prior + jnp.sum(likelihood, -1)

        return target_log_prob
