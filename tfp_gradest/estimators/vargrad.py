"""VarGrad: the gradient of the log-variance loss, a score function with leave-one-out baselines."""

from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register

__all__ = ["VarGrad"]


@register("vargrad")
class VarGrad(GradientEstimator):
    """VarGrad (Richter, Boustati, Nüsken, Ruiz & Akyildiz, 2020): the log-variance loss.

    With `S >= 2` draws `z̄_s` from a *stopped* copy `q̄` of the surrogate and the
    log-ratio `f_φ(z) = log q_φ(z) - log p_θ(x, z)`, the log-variance loss is the
    sample variance of `f` over the draws (the paper's `Var_{z~r}[log q/p]` at the
    reference distribution `r = q̄`). Its gradient with respect to `q`'s parameters
    `φ`, halved, is the estimator:

    ```none
    L̂_LV = (1/(S-1)) Σ_s (f_φ(z̄_s) - f̄)²,           f̄ = (1/S) Σ_s f_φ(z̄_s)
    ½ ∇_φ L̂_LV = (1/(S-1)) Σ_s (f_s - f̄) ∇_φ log q_φ(z̄_s)
               = (1/S) Σ_s (f_s - b_s) ∇_φ log q_φ(z̄_s),  b_s = mean_{s' ≠ s} f_{s'}
    ```

    using `f_s - f̄ = ((S-1)/S)(f_s - b_s)`. That is the score-function gradient of
    `KL(q || p) = -ELBO + log p(x)` with a leave-one-out baseline (Kool et al.'s
    REINFORCE leave-one-out), without the score term `(1/S) Σ_s ∇ log q_φ(z̄_s)`,
    whose mean is zero: so it is unbiased for the negative ELBO's gradient, and
    `ScoreFunction(baseline="leave_one_out")`'s loss gradient minus that term,
    draw by draw with the same seed. The factor: the paper's loss has no `½` (nor has
    the authors' code, which takes the unbiased sample variance), so its gradient at
    `r = q` is *twice* the KL divergence's, `∇_φ Var_{q̄}[f_φ] = 2 Cov_q[f, ∇ log q]
    = 2 ∇_φ KL(q || p)`, and `∇ L̂_LV` twice the leave-one-out estimator. This
    estimator returns `½ ∇ L̂_LV`, on the ELBO's scale like every other estimator's
    (what `tfp.vi`'s optimisers and learning rates expect).

    Model parameters `θ` that the target closes over (a decoder) get the ELBO's
    gradient `(1/S) Σ_s ∇_θ log p_θ(x, z̄_s)`, not the log-variance loss's own
    `θ`-gradient (which estimates `2 Cov_q[f, -∇_θ log p_θ]`, not the ELBO's), as
    in the authors' experiments, which train the decoder on the ELBO. The value
    reported is the negative ELBO estimate `-(1/S) Σ_s log w_s`, as with every
    estimator; the loss's gradient is the one above.

    Each draw's term only needs `stop(f_s - f̄)`: `f̄` is stopped in the surrogate
    below, which leaves the gradient unchanged because `Σ_s (f_s - f̄) = 0` (the
    term `-Σ_s (f_s - f̄) ∇f̄` it drops is exactly zero).

    Discrete and mixed surrogates: every part is differentiated through its score,
    none through the samples, so Bernoulli, Categorical and joint distributions
    mixing them with reparameterised parts all work (for pathwise gradients of the
    reparameterised parts use `ScoreFunction(reparameterized_parts="pathwise")`).
    Needs `sample_size >= 2` and `importance_sample_size = 1`; reverse KL only.

    Zero density: a draw where the target's density is zero (`f = +inf`) is left
    out of the variance, and with it of the other draws' baselines, exactly as
    `ScoreFunction("leave_one_out")` leaves it out; the loss is then `+inf` (the
    ELBO estimate is `-inf`) and the gradient that of the draws with density. With
    fewer than two such draws there is no variance and `φ` gets no gradient.

    Runs on TensorFlow and on TFP's JAX substrate with the same call; it keeps no
    state.

    #### Examples

    ```python
    q = tfd.Independent(tfd.Bernoulli(logits=logits), 1)
    loss = tge.estimators.VarGrad().loss(target_log_prob_fn, q, sample_size=8, seed=0)
    ```

    #### References

    [1] Richter, Boustati, Nüsken, Ruiz & Akyildiz. VarGrad: A Low-Variance
        Gradient Estimator for Variational Inference. NeurIPS 2020.
        https://arxiv.org/abs/2010.10436
    [2] Kool, van Hoof & Welling. Buy 4 REINFORCE Samples, Get a Baseline for
        Free! ICLR 2019 workshop. https://openreview.net/forum?id=r1lgTGL5DE
    """

    data_path = "log_weight_terms"
    requires_reparameterization = False
    min_sample_size = 2
    max_importance_sample_size = 1
    reverse_kl_only_because = (
        " (only there does the log-variance loss's gradient equal the divergence's)"
    )

    def _objective(self, inputs):
        ops = inputs.ops
        terms = lw.log_weight_terms(inputs, with_path=False)
        log_w = terms.log_weights[:, 0]
        value = -inputs.discrepancy_fn(log_w)
        # `log p̃` has gradient to θ only, `log q̃` to φ only (the samples are stopped).
        log_p, log_q = terms.target_log_prob[:, 0], terms.surrogate_log_prob[:, 0]
        # f = log q_φ(z̄) - log p(x, z̄), live in φ only: the log-variance loss is for φ.
        f = log_q - ops.stop_gradient(log_p)
        # Draws of zero target density (f = +inf) are left out of the variance (they
        # would make it, and every other draw's term, infinite). `where` on `f` first,
        # so that the zero cotangent of a left-out draw never meets its infinity.
        alive = ~ops.equal(ops.stop_gradient(log_w), -float("inf"))
        f = ops.where(alive, f, ops.zeros_like(f))
        n = ops.reduce_sum(ops.cast(alive, f.dtype), axis=0, keepdims=True)
        mean = ops.stop_gradient(ops.divide_no_nan(ops.reduce_sum(f, axis=0, keepdims=True), n))
        centered = ops.where(alive, f - mean, ops.zeros_like(f))
        # n/(n-1) per draw makes the mean over the S draws (1/S)(n/(n-1)) Σ (f - f̄)², whose
        # half-gradient is (1/S) Σ (f_s - b_s) ∇ log q: ScoreFunction's leave-one-out scale.
        # With n = S this is half the unbiased sample variance; n < 2: no variance, 0.
        scale = ops.divide_no_nan(n, n - 1.0)
        log_variance = 0.5 * scale * ops.square(centered)
        # Maximised: minus the log-variance (for φ) plus log p̃ (the ELBO gradient for θ). A
        # draw of zero density has log p̃ = -inf; `surrogate_objective` drops its term.
        return value, log_p - log_variance
