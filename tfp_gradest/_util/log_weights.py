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
    target_log_prob_fn,
    surrogate_posterior,
    samples,
    sample_size,
    importance_sample_size,
    with_path=True,
):
    """Splits `log w` into direct and path parts (see `LogWeightTerms`).

    The path derivative is computed with an inner tape at the stopped samples
    and re-attached as `stop(∂ log w/∂z) · (z - z̄)`. Unlike stopping the
    surrogate's parameters, this also works when the target has trainable
    variables (a decoder): those receive gradient only through `log p̃`.

    The inner gradient is of `Σ_k log w_k`; it equals the per-sample gradients
    because each `log w_k` depends on its own `z_k` only: the target must treat
    the leading sample axis as independent draws, as `tfp.vi` also assumes.

    With `with_path=False` no inner gradient is taken and `path_log_weights` is
    zeros: for estimators that need no path term (RWS), which also work on
    discrete samples.
    """
    stopped = structure.stop_gradient(samples)
    flat_stopped = tf.nest.flatten(stopped)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        if with_path:
            tape.watch(flat_stopped)
        target_lp = structure.call_target(target_log_prob_fn, stopped)
        surrogate_lp = surrogate_posterior.log_prob(stopped)
        log_weights = target_lp - surrogate_lp
    if with_path:
        grads = tape.gradient(
            log_weights, flat_stopped, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        sample_rank = log_weights.shape.rank
        path = tf.add_n(
            [
                # A sample with log w = -inf can have a non-finite gradient; its
                # weight is zero, and zeroing here keeps 0 * inf out of the sums.
                structure.reduce_event(_finite_or_zero(g) * (z - z_bar), sample_rank)
                for g, z, z_bar in zip(grads, tf.nest.flatten(samples), flat_stopped)
            ]
        )
    else:
        path = tf.zeros_like(log_weights)

    def split(t):
        return structure.reshape_leading(t, sample_size, importance_sample_size)

    return LogWeightTerms(
        log_weights=split(log_weights),
        target_log_prob=split(target_lp),
        surrogate_log_prob=split(surrogate_lp),
        path_log_weights=split(path),
    )


def _finite_or_zero(gradient):
    gradient = tf.stop_gradient(gradient)
    return tf.where(tf.math.is_finite(gradient), gradient, tf.zeros_like(gradient))


def path_weighted_surrogate(
    target_log_prob_fn,
    surrogate_posterior,
    samples,
    sample_size,
    importance_sample_size,
    coefficients_fn,
):
    """A surrogate with gradient `Σ_k c_k ∇log p̃_k + a_k ∇log ŵ_k`, in ONE backward pass through the target.

    `coefficients_fn(log_w) -> (c, a)` maps stopped log-weights `[S, K] + batch`
    to stopped coefficients of the same shape, with `a = 0` wherever `c = 0`.
    Estimators of the form `Σ w̃ log p̃ + a(w̃) log ŵ` (IWAE-DReG, RWS-DReG,
    DReG(α), IWAE-STL, and STL with `c = a = 1`) use `c = w̃`.

    Why one pass suffices: a single vector-Jacobian product of `log p(x, z)` with
    cotangent `c` gives `Σ c_k ∇θ log p_k` for the model's variables and
    `c_k ∇z log p_k` for each sample; the path term needs `a_k ∇z log p_k`, which
    is that times `a_k / c_k`. The surrogate's `∇z log q` is a second, cheap
    product through `log q` only. `q`'s parameters get no direct gradient (the
    doubly-reparameterised estimators drop that score term) and reach the
    gradient through `z = g_φ(ε)`, outside this function. Compared with
    `log_weight_terms`, this saves one backward pass through a decoder.

    Returns:
      log_weights: `[S, K] + batch`, no gradient.
      surrogate: `[S] + batch`.
    """
    flat_samples = tf.nest.flatten(samples)
    num_parts = len(flat_samples)

    def split(t):
        return structure.reshape_leading(t, sample_size, importance_sample_size)

    def merge(t):
        return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))

    @tf.custom_gradient
    def surrogate_fn(*flat_z):
        # Fresh tensors: TFP caches bijector inverses by tensor identity, so
        # `q.log_prob` of the very tensor `q.sample` returned would reuse the
        # cached noise `ε` and report `∂ log q / ∂z = 0`.
        flat_z = [tf.identity(t) for t in flat_z]
        z = tf.nest.pack_sequence_as(samples, flat_z)
        with tf.GradientTape(persistent=True, watch_accessed_variables=True) as tape:
            tape.watch(flat_z)
            target_lp = structure.call_target(target_log_prob_fn, z)
            surrogate_lp = surrogate_posterior.log_prob(z)
        log_w = tf.stop_gradient(split(target_lp - surrogate_lp))
        c, a = coefficients_fn(log_w)
        value = weighted_sum(c, log_w)
        sample_rank = target_lp.shape.rank

        def grad_fn(upstream, unused_log_w_upstream, variables=None):
            # The log-weights output is returned stopped, so its upstream is ignored.
            variables = list(variables or [])
            c_up, a_up = merge(c * upstream[:, tf.newaxis]), merge(a * upstream[:, tf.newaxis])
            grads = tape.gradient(
                target_lp,
                list(flat_z) + variables,
                output_gradients=c_up,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            from_q = tape.gradient(
                surrogate_lp,
                list(flat_z),
                output_gradients=a_up,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            ratio = merge(tf.math.divide_no_nan(a, c))
            z_grads = []
            for from_p, q_part in zip(grads[:num_parts], from_q):
                event_rank = from_p.shape.rank - sample_rank
                scale = tf.reshape(
                    ratio, tf.concat([tf.shape(ratio), tf.ones([event_rank], tf.int32)], 0)
                )
                z_grads.append(_finite_or_zero(scale * from_p - q_part))
            return z_grads, grads[num_parts:]

        return (value, log_w), grad_fn

    surrogate, log_weights = surrogate_fn(*flat_samples)
    return tf.stop_gradient(log_weights), surrogate


def weighted_sum(coefficients, terms, axis=1):
    """`Σ_k c_k t_k` over `axis`, where a zero coefficient contributes exactly 0.

    A sample with `log w = -inf` has weight 0 but may have `t = -inf`; plain
    multiplication would give `0 * inf = NaN` in the value and the gradient.
    """
    products = tf.where(coefficients != 0, coefficients * terms, tf.zeros_like(terms))
    return tf.reduce_sum(products, axis=axis)
