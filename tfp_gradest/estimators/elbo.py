"""Single-sample ELBO estimators with pathwise gradients: reparameterisation and STL.

Both run on TensorFlow and on TFP's JAX substrate with the same call
(`tfp_gradest._substrate`).
"""

import numpy as np

from tfp_gradest import _substrate
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import normalized_weights

__all__ = ["Reparameterization", "STL"]


@register("reparameterization")
class Reparameterization(GradientEstimator):
    """The reparameterisation-trick (pathwise) gradient of the ELBO.

    With `z = g_φ(ε)`, `ε ~ p(ε)`:

    ```none
    ELBO(θ, φ) = E_q[log p_θ(x, z) - log q_φ(z)]
    ∇ ELBO     ≈ (1/S) Σ_s ∇ [log p_θ(x, g_φ(ε_s)) - log q_φ(g_φ(ε_s))]
    ```

    Unbiased. With a Csiszar `discrepancy_fn` `D` other than the reverse KL it is
    the pathwise gradient of `E_q[D(log w)]`, which is still correct, so any
    `tfp.vi` discrepancy is accepted.

    With `analytic_entropy=True` the value is `E_q[log p] + H[q]`, using the
    surrogate's closed-form entropy (reverse KL only): a lower-variance estimate
    of the same ELBO, whose value therefore differs from the Monte Carlo one.

    Args:
      analytic_entropy: Python `bool`. Default value: `False`.

    #### References

    [1] Kingma & Welling. Auto-Encoding Variational Bayes. ICLR 2014.
        https://arxiv.org/abs/1312.6114
    """

    max_importance_sample_size = 1
    supports_discrepancy_fn = True

    def __init__(self, analytic_entropy=False):
        if not isinstance(analytic_entropy, (bool, np.bool_)):
            raise TypeError(
                "`analytic_entropy` must be a bool. "
                f"Received: analytic_entropy={analytic_entropy!r}"
            )
        analytic_entropy = bool(analytic_entropy)
        self._analytic_entropy = analytic_entropy

    @property
    def analytic_entropy(self):
        """Python `bool`: the value uses the surrogate's closed-form entropy."""
        return self._analytic_entropy

    def _validate_options(self, discrepancy_fn):
        if self._analytic_entropy and not _substrate.is_kl_reverse(discrepancy_fn):
            raise ValueError(
                "Reparameterization(analytic_entropy=True) estimates the ELBO, so "
                "`discrepancy_fn` must be `tfp.vi.kl_reverse`. "
                f"Received: discrepancy_fn={discrepancy_fn!r}"
            )

    def _objective(self, inputs):
        pathwise = lw.pathwise_log_weights(inputs)
        if self._analytic_entropy:
            # `log p(x, z) + H[q]`: the Monte Carlo `-log q(z)` replaced by its expectation.
            value = pathwise.target_log_prob[:, 0] + inputs.surrogate_posterior.entropy()
        else:
            value = -inputs.discrepancy_fn(pathwise.log_weights[:, 0])
        # Value and gradient coincide: this is the plain objective.
        return value, value


@register("stl")
class STL(GradientEstimator):
    """ "Sticking the landing": the path derivative of the ELBO (Roeder et al., 2017).

    The reparameterisation gradient splits into a path term and the score
    `∇_φ log q_φ(z)` at fixed `z`, whose expectation is zero. STL drops it:

    ```none
    surrogate = log p_θ(x, z̄) + log ŵ(z)        (K = 1)
    ∇_φ ≈ (∂/∂z [log p(x, z) - log q_φ(z)])|_{z = g_φ(ε)} · ∂g_φ(ε)/∂φ
    ∇_θ ≈ ∇_θ log p_θ(x, z)
    ```

    Unbiased for the ELBO gradient, and exactly zero (zero variance) in `φ`
    when `q` equals the exact posterior, since then `log p - log q` is constant
    in `z`. Only valid for the reverse KL (the dropped score has zero mean only
    under `q`'s own expectation of `log w`'s gradient there).

    The model parameters `θ` keep their ordinary gradient, and only `q`'s direct
    (score) term is dropped, so a decoder inside the target is handled too; the
    gradient takes one backward pass through the target
    (`tfp_gradest._util.log_weights.path_weighted_surrogate`), like the
    reparameterisation gradient itself.

    #### References

    [1] Roeder, Wu & Duvenaud. Sticking the Landing: Simple, Lower-Variance
        Gradient Estimators for Variational Inference. NeurIPS 2017.
        https://arxiv.org/abs/1703.09194
    """

    data_path = "path_weighted_surrogate"
    max_importance_sample_size = 1
    reverse_kl_only_because = " (it drops a score term whose mean is zero only there)"

    def _objective(self, inputs):
        # `inputs.discrepancy_fn` is validated to be the reverse KL. At K = 1 the
        # normalised weight is 1 (0 for a sample of zero target density), so
        # c = a = w̃ gives `log p̃ + log ŵ`: IWAE-DReG at K = 1.
        log_weights, surrogate = lw.path_weighted_surrogate(
            inputs, lambda log_w: (normalized_weights(log_w),) * 2
        )
        return log_weights[:, 0], surrogate
