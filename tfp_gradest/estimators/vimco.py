"""VIMCO: the multi-sample score-function estimator with leave-one-out baselines."""

import tensorflow as tf

from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import (
    leave_one_out_log_weights,
    log_mean_exp,
    weighted_sum,
)

__all__ = ["VIMCO"]


@register("vimco")
class VIMCO(GradientEstimator):
    """Variational inference for Monte Carlo objectives (Mnih & Rezende, 2016).

    A score-function gradient of the IWAE bound `L̂ = log (1/K) Σ_j w_j` in which
    each sample's learning signal has a baseline built from the other samples,
    with `w_k` replaced by the geometric mean of the others:

    ```none
    L̂^{(-k)} = log (1/K) [Σ_{j≠k} w_j + exp(mean_{j≠k} log w_j)]
    s = Σ_k stop(L̂ - L̂^{(-k)}) · log q_φ(z̄_k) + L̂(z̄)
    ```

    where the last term, at stopped samples, gives `Σ_k w̃_k ∇ log w_k` for the
    parameters appearing directly (the model's `θ`, and `q`'s own score term).
    Unbiased; needs `K >= 2`; no reparameterisation (discrete latents).

    #### References

    [1] Mnih & Rezende. Variational Inference for Monte Carlo Objectives.
        ICML 2016. https://arxiv.org/abs/1602.06725
    """

    requires_reparameterization = False
    min_importance_sample_size = 2

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
            target_log_prob_fn, surrogate_posterior, samples, sample_size, k, with_path=False
        )
        value = log_mean_exp(terms.log_weights)
        log_w = tf.stop_gradient(terms.log_weights)
        # mean_{j≠k} log w_j, summed with the diagonal zeroed rather than as
        # `sum - log w_k`, which is NaN when log w_k = -inf.
        others = leave_one_out_log_weights(log_w, fill=tf.zeros_like(log_w))
        mean_of_others = tf.reduce_sum(others, axis=2) / (k - 1.0)
        baseline = log_mean_exp(leave_one_out_log_weights(log_w, fill=mean_of_others), axis=2)
        signal = tf.stop_gradient(log_mean_exp(log_w)[:, tf.newaxis] - baseline)
        return value, weighted_sum(signal, terms.surrogate_log_prob) + value
