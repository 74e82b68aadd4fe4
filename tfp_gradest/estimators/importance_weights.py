"""Shared arithmetic of importance-weighted objectives: log-mean-exp, weights, safe sums."""

import tensorflow as tf

from tfp_gradest._util.log_weights import weighted_sum

__all__ = ["leave_one_out_log_weights", "log_mean_exp", "normalized_weights", "weighted_sum"]


def log_mean_exp(log_weights, axis=1):
    """`log (1/K) Σ_k exp(log w_k)` over `axis`, stable for log-weights of any size."""
    k = tf.cast(tf.shape(log_weights)[axis], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=axis) - tf.math.log(k)


def normalized_weights(log_weights, axis=1):
    """`w̃ = stop(softmax(log w))`: self-normalised importance weights, gradient stopped."""
    return tf.stop_gradient(tf.nn.softmax(log_weights, axis=axis))


def leave_one_out_log_weights(log_weights, fill=None):
    """`[S, K] + batch` -> `[S, K, K] + batch`: row `i` holds `log w_j`, with entry `j = i` replaced.

    The replaced entry is `-inf` (leaving sample `i` out) or `fill[:, i]`.
    """
    k = log_weights.shape[1]
    batch_rank = log_weights.shape.rank - 2
    eye = tf.reshape(tf.eye(k, dtype=tf.bool), [1, k, k] + [1] * batch_rank)
    rows = tf.broadcast_to(
        log_weights[:, tf.newaxis],
        tf.concat([tf.shape(log_weights)[:1], [k], tf.shape(log_weights)[1:]], 0),
    )
    if fill is None:
        fill = tf.fill(tf.shape(rows), tf.constant(-float("inf"), log_weights.dtype))
    else:
        fill = tf.broadcast_to(fill[:, :, tf.newaxis], tf.shape(rows))
    return tf.where(eye, fill, rows)
