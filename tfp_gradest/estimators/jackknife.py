"""Jackknife variational inference (Nowozin, 2018), first order, with plain and DReG gradients.

Both run on TensorFlow and on TFP's JAX substrate with the same call
(`tfp_gradest._substrate`).
"""

from tfp_gradest import _substrate
from tfp_gradest._util import arguments
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import (
    leave_one_out_logsumexp,
    log_mean_exp,
    normalized_weights,
    weighted_sum,
)

__all__ = ["JVI", "JVIDReG"]


def _leave_one_out_bounds(log_weights):
    """`L_{K-1}^{(-i)} = log (1/(K-1)) Σ_{j≠i} w_j` for each `i`: `[S, K] + batch`, O(K) memory."""
    ops = _substrate.of(log_weights)
    k = ops.cast(ops.axis_size(log_weights, 1), log_weights.dtype)
    return leave_one_out_logsumexp(log_weights) - ops.log(k - 1.0)


def _held_out_weight_sums(log_weights, power):
    """`Σ_{i≠j} (w̃_j^{(-i)})^power` for each `j`, with `w̃^{(-i)} = softmax_{l≠i} log w`.

    Swapping the sums of `Σ_i Σ_{j≠i} (w_j / Z_i)^p t_j` (`Z_i = Σ_{l≠i} w_l`) gives
    `Σ_j w_j^p (Σ_{i≠j} Z_i^{-p}) t_j`: two leave-one-out log-sum-exps instead of a
    `[K, K]` matrix of held-out weights. Gradient stopped, as `normalized_weights`.
    """
    ops = _substrate.of(log_weights)
    log_weights = ops.stop_gradient(log_weights)
    log_z = leave_one_out_logsumexp(log_weights)
    # A held-out set with no density (`Z_i = 0`: only sample `i` has density) has held-out
    # weights 0, as `normalized_weights` gives (not `w_j^p · 0^{-p} = 0 · inf`): its `i` is
    # left out of the sums.
    inverse = ops.where(
        ops.equal(log_z, -float("inf")),
        ops.fill(log_z, -float("inf")),
        -power * log_z,
    )
    sums = ops.exp(power * log_weights + leave_one_out_logsumexp(inverse))
    # No sample of nonzero density: every held-out weight is 0 (not -inf + inf = NaN).
    no_density = ops.reduce_all(ops.equal(log_weights, -float("inf")), axis=1, keepdims=True)
    return ops.where(no_density, ops.zeros_like(sums), sums)


def _jackknife(full, leave_one_out_terms, k):
    """`K · L_K - (K-1)/K · Σ_i L_{K-1}^{(-i)}` from the full and leave-one-out parts."""
    ops = _substrate.of(full)
    k = ops.cast(k, full.dtype)
    estimate = k * full - (k - 1.0) / k * ops.reduce_sum(leave_one_out_terms, axis=1)
    # No sample of nonzero density: every bound is -inf, and so is the estimate
    # (not K·(-inf) + inf = NaN).
    return ops.where(ops.equal(full, -float("inf")), full, estimate)


def _finite_terms(held_out):
    """`held_out` with its `-inf` entries replaced by 0, for the surrogate's gradient.

    When only sample `i` of an objective has density, `L_{K-1}^{(-i)} = log 0 = -inf`
    and the jackknife estimate is `+inf` (the loss `-inf`): JVI is not a bound, and
    with one sample of density it diverges. That `-inf` term is constant around the
    samples (the others have density 0 there), so its derivative is 0 and the
    estimate's gradient is that of the finite terms. (The `-inf` is replaced in a
    copy whose gradient flows only where it is finite.)
    """
    ops = _substrate.of(held_out)
    is_neg_inf = ops.equal(ops.stop_gradient(held_out), -float("inf"))
    return ops.where(is_neg_inf, ops.zeros_like(held_out), held_out)


class _JackknifeBase(GradientEstimator):
    min_importance_sample_size = 2

    def __init__(self, order=1):
        self._order = arguments.check_integer(
            "order", order, 1, 1, reason="only the first-order jackknife is implemented"
        )

    @property
    def order(self):
        """Python `int`, the jackknife's order (only `1` is implemented)."""
        return self._order


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

    def _objective(self, inputs):
        log_weights = lw.pathwise_log_weights(inputs).log_weights
        held_out = _leave_one_out_bounds(log_weights)
        full, k = log_mean_exp(log_weights), inputs.importance_sample_size
        value = _jackknife(full, held_out, k)
        # The gradient of the terms that are finite: see `_finite_terms`.
        return value, _jackknife(full, _finite_terms(held_out), k)


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

    data_path = "log_weight_terms"
    reverse_kl_only_because = " (its DReG terms drop a score term whose mean is zero only there)"

    def _objective(self, inputs):
        k = inputs.importance_sample_size
        terms = lw.log_weight_terms(inputs)
        log_w = terms.log_weights

        value = _jackknife(log_mean_exp(log_w), _leave_one_out_bounds(log_w), k)
        full = normalized_weights(log_w)
        full_surrogate = weighted_sum(full, terms.target_log_prob) + weighted_sum(
            inputs.ops.square(full), terms.path_log_weights
        )
        # Σ_i s^{(-i)}, regrouped by sample j (see _held_out_weight_sums).
        held_out = weighted_sum(
            _held_out_weight_sums(log_w, 1.0), terms.target_log_prob
        ) + weighted_sum(_held_out_weight_sums(log_w, 2.0), terms.path_log_weights)
        surrogate = _jackknife(full_surrogate, held_out[:, None], k)
        return value, surrogate
