"""Log importance weights `log w = log p(x, z) - log q(z)`, and their gradient paths.

The data path of one estimator step is: seed -> samples -> target and surrogate
log-densities -> log-weights -> the estimator's surrogate. This module owns the
middle arrows. Samples are drawn with one flat leading axis of size `S * K`
(exactly as `tfp.vi` does, so targets written for `tfp.vi` work unchanged) and
log-weights are returned with that axis split into `[S, K]`.
"""

from typing import NamedTuple

import tensorflow as tf

from tfp_gradest._util import structure


class LogWeightTerms(NamedTuple):
    """Log-weights at stopped samples `z̄`, split by where their gradient flows.

    In the stop-gradient notation of Tucker et al. (2019, appendix 8.3), with
    `z = g_φ(ε)`, every field has shape `[S, K] + batch_shape`:

    * `log_weights`: `log w = log p_θ(x, z̄) - log q_φ(z̄)`; gradient reaches `θ`
      and `φ` where they appear directly, never through `z`.
    * `target_log_prob`: `log p̃ = log p_θ(x, z̄)`; gradient to `θ` only.
    * `surrogate_log_prob`: `log q̃ = log q_φ(z̄)`; gradient to `φ` directly only.
    * `path_log_weights`: `log ŵ`, whose value is exactly `0` and whose gradient
      is the path derivative `(∂ log w / ∂z)|_z̄ · ∂z/∂φ` only.

    The full reparameterisation gradient of `log w(z)` is the gradient of
    `log p̃ - log q̃ + log ŵ` (direct plus path terms), which the tests check.
    """

    log_weights: tf.Tensor
    target_log_prob: tf.Tensor
    surrogate_log_prob: tf.Tensor
    path_log_weights: tf.Tensor


def sample(surrogate_posterior, sample_size, importance_sample_size, seed):
    """Draws `S * K` samples (flat leading axis); gradients flow through reparameterised parts."""
    return surrogate_posterior.sample([sample_size * importance_sample_size], seed=seed)


def pathwise_log_weights(
    target_log_prob_fn, surrogate_posterior, sample_size, importance_sample_size, seed
):
    """`log w(z)` with every gradient live (parameters directly and through `z`).

    Uses `experimental_sample_and_log_prob`, as `tfp.vi` does, so a surrogate
    built from bijectors never has to invert them.

    Returns:
      samples: the flat `[S * K]` samples.
      log_weights: `[S, K] + batch_shape`.
    """
    samples, surrogate_lp = surrogate_posterior.experimental_sample_and_log_prob(
        [sample_size * importance_sample_size], seed=seed
    )
    log_weights = structure.call_target(target_log_prob_fn, samples) - surrogate_lp
    return samples, structure.reshape_leading(log_weights, sample_size, importance_sample_size)


def log_weight_terms(
    target_log_prob_fn, surrogate_posterior, samples, sample_size, importance_sample_size
):
    """Splits `log w` into direct and path parts (see `LogWeightTerms`).

    The path derivative is computed with an inner tape at the stopped samples
    and re-attached as `stop(∂ log w/∂z) · (z - z̄)`. Unlike stopping the
    surrogate's parameters, this also works when the target has trainable
    variables (a decoder): those receive gradient only through `log p̃`.

    The inner gradient is of `Σ_k log w_k`; it equals the per-sample gradients
    because each `log w_k` depends on its own `z_k` only: the target must treat
    the leading sample axis as independent draws, as `tfp.vi` also assumes.
    """
    stopped = structure.stop_gradient(samples)
    flat_stopped = tf.nest.flatten(stopped)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(flat_stopped)
        target_lp = structure.call_target(target_log_prob_fn, stopped)
        surrogate_lp = surrogate_posterior.log_prob(stopped)
        log_weights = target_lp - surrogate_lp
    grads = tape.gradient(
        log_weights, flat_stopped, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    sample_rank = log_weights.shape.rank
    path = tf.add_n(
        [
            structure.reduce_event(tf.stop_gradient(g) * (z - z_bar), sample_rank)
            for g, z, z_bar in zip(grads, tf.nest.flatten(samples), flat_stopped)
        ]
    )

    def split(t):
        return structure.reshape_leading(t, sample_size, importance_sample_size)

    return LogWeightTerms(
        log_weights=split(log_weights),
        target_log_prob=split(target_lp),
        surrogate_log_prob=split(surrogate_lp),
        path_log_weights=split(path),
    )
