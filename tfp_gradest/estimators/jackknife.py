"""Jackknife variational inference (Nowozin, 2018), first order, with plain and DReG gradients."""

import tensorflow as tf

from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import (
    leave_one_out_log_weights,
    log_mean_exp,
    normalized_weights,
    weighted_sum,
)

__all__ = ["JVI", "JVIDReG"]


def _leave_one_out_bounds(held_out_log_weights):
    """`L_{K-1}^{(-i)} = log (1/(K-1)) Σ_{j≠i} w_j` for each row `i` of `leave_one_out_log_weights`.

    The `-inf` entry of row `i` adds nothing to the sum, so only the divisor changes.
    """
    k = tf.cast(tf.shape(held_out_log_weights)[2], held_out_log_weights.dtype)
    return tf.reduce_logsumexp(held_out_log_weights, axis=2) - tf.math.log(k - 1.0)


def _jackknife(full, leave_one_out_terms, k):
    """`K · L_K - (K-1)/K · Σ_i L_{K-1}^{(-i)}` from the full and leave-one-out parts."""
    k = tf.cast(k, full.dtype)
    return k * full - (k - 1.0) / k * tf.reduce_sum(leave_one_out_terms, axis=1)


class _JackknifeBase(GradientEstimator):
    min_importance_sample_size = 2

    def __init__(self, order=1):
        if order != 1:
            raise ValueError(
                f"Only first-order jackknife is implemented. Received: order={order!r}"
            )
        self._order = order

    def __repr__(self):
        return f"{type(self).__name__}(order={self._order})"


@register("jvi")
class JVI(_JackknifeBase):
    """First-order jackknife variational inference, pathwise gradient.

    ```none
    L_JVI = K · L_K - (K-1)/K · Σ_i L_{K-1}^{(-i)},   L_{K-1}^{(-i)} = log (1/(K-1)) Σ_{j≠i} w_j
    ```

    The jackknife removes the `O(1/K)` bias of the IWAE bound as an estimator of
    `log p(x)`. It is **not a bound**. The value and gradient are those of
    `L_JVI` itself. Needs `K >= 2`.

    #### References

    [1] Nowozin. Debiasing Evidence Approximations: On Importance-weighted
        Autoencoders and Jackknife Variational Inference. ICLR 2018.
        https://openreview.net/forum?id=HyZoi-WRb
    """

    def _objective(
        self,
        target_log_prob_fn,
        surrogate_posterior,
        sample_size,
        importance_sample_size,
        seed,
        discrepancy_fn,
    ):
        _, log_weights = lw.pathwise_log_weights(
            target_log_prob_fn, surrogate_posterior, sample_size, importance_sample_size, seed
        )
        held_out = _leave_one_out_bounds(leave_one_out_log_weights(log_weights))
        value = _jackknife(log_mean_exp(log_weights), held_out, importance_sample_size)
        return value, value


@register("jvi_dreg")
class JVIDReG(_JackknifeBase):
    """JVI with every IWAE term's φ-gradient replaced by its IWAE-DReG surrogate.

    ```none
    s = K · s_K - (K-1)/K · Σ_i s^{(-i)},
    s^{(-i)} = Σ_{j≠i} w̃_j^{(-i)} log p̃_j + (w̃_j^{(-i)})² log ŵ_j,   w̃^{(-i)} = softmax_{j≠i} log w
    ```

    Each `L_{K-1}^{(-i)}` is an IWAE bound on `K-1` samples, for which the DReG
    surrogate is unbiased, so the combination is unbiased for `∇ E[L_JVI]`.
    """

    def _objective(
        self,
        target_log_prob_fn,
        surrogate_posterior,
        sample_size,
        importance_sample_size,
        seed,
        discrepancy_fn,
    ):
        k = importance_sample_size
        samples = lw.sample(surrogate_posterior, sample_size, k, seed)
        terms = lw.log_weight_terms(
            target_log_prob_fn, surrogate_posterior, samples, sample_size, k
        )
        log_w = terms.log_weights

        def dreg_surrogate(weights, axis):
            target = terms.target_log_prob if axis == 1 else terms.target_log_prob[:, tf.newaxis]
            path = terms.path_log_weights if axis == 1 else terms.path_log_weights[:, tf.newaxis]
            return weighted_sum(weights, target, axis) + weighted_sum(
                tf.square(weights), path, axis
            )

        held_out_log_w = leave_one_out_log_weights(log_w)
        value = _jackknife(log_mean_exp(log_w), _leave_one_out_bounds(held_out_log_w), k)
        surrogate = _jackknife(
            dreg_surrogate(normalized_weights(log_w), axis=1),
            dreg_surrogate(normalized_weights(held_out_log_w, axis=2), axis=2),
            k,
        )
        return value, surrogate
