"""VIMCO: the multi-sample score-function estimator with leave-one-out baselines."""

from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import (
    leave_one_out_logsumexp,
    leave_one_out_mean,
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

    With a Csiszar `discrepancy_fn` `f` the objective is `-f(L̂)` (as in
    `tfp.vi`'s `csiszar_vimco`), and the signal `stop(f(L̂^{(-k)}) - f(L̂))`:
    the baseline still does not depend on `z_k`, so the estimator stays unbiased.

    Runs on TensorFlow and on TFP's JAX substrate with the same call.

    #### References

    [1] Mnih & Rezende. Variational Inference for Monte Carlo Objectives.
        ICML 2016. https://arxiv.org/abs/1602.06725
    """

    data_path = "log_weight_terms"
    requires_reparameterization = False
    min_importance_sample_size = 2
    supports_discrepancy_fn = True

    def _objective(self, inputs):
        ops, k = inputs.ops, inputs.importance_sample_size
        terms = lw.log_weight_terms(inputs, with_path=False)
        f = inputs.discrepancy_fn
        value = -f(log_mean_exp(terms.log_weights))
        log_w = ops.stop_gradient(terms.log_weights)
        # L̂^{(-k)}: the others' log-sum-exp plus the geometric mean of the others,
        # each in O(K) memory (no [K, K] tensor; see leave_one_out_logsumexp).
        replacement = leave_one_out_mean(log_w)
        baseline = ops.reduce_logsumexp(
            ops.stack([leave_one_out_logsumexp(log_w), replacement], axis=-1), axis=-1
        ) - ops.log(ops.cast(k, log_w.dtype))
        signal = ops.stop_gradient(f(baseline) - f(log_mean_exp(log_w))[:, None])
        # As in ScoreFunction: an objective with no sample of nonzero density has no
        # signal (inf - inf), and an infinite signal (a baseline of zero density) no
        # finite score term; both are dropped. The loss is then +inf. NaN passes.
        no_density = ops.reduce_all(ops.equal(log_w, -float("inf")), axis=1, keepdims=True)
        signal = ops.where(no_density | ops.is_inf(signal), ops.zeros_like(signal), signal)
        return value, weighted_sum(signal, terms.surrogate_log_prob) + value
