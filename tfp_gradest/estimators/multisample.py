"""Importance-weighted estimators: IWAE and the doubly-reparameterised family (Tucker et al., 2019).

In the notation of docs/design/surrogate_loss.md, with `w̃ = stop(softmax_k log w)` and the
log-weight terms of `tfp_gradest._util.log_weights`, every estimator here has a
surrogate of one form (per objective, summed over the `K` samples):

```none
s = Σ_k  w̃_k log p̃(x, z_k)  +  a(w̃_k) log ŵ_k  +  b(w̃_k) log q̃(z_k)
```

| estimator       | a(w̃)                    | b(w̃) | gradient                         |
|-----------------|-------------------------|------|----------------------------------|
| IWAE (Burda)    | w̃                       | -w̃   | standard IWAE                    |
| IWAEDReG        | w̃²                      | 0    | Tucker eq. 7, unbiased           |
| RWS (wake-φ)    | 0                       | +w̃   | reweighted wake-sleep            |
| RWSDReG         | w̃ - w̃²                  | 0    | Tucker eq. 9                     |
| DReG(α)         | α w̃ + (1 - 2α) w̃²       | 0    | Tucker eq. 10 (α=0: IWAE-DReG)   |
| IWAESTL         | w̃                       | 0    | biased for K > 1                 |

The model parameters `θ` appear only in `log p̃`, with weight `w̃`: they always
receive the IWAE gradient `Σ w̃ ∇θ log p`, never a `w̃²` term (TFP 0.25's
DOUBLY_REPARAMETERIZED, which stops the surrogate's parameters instead, gets
this wrong for a target with trainable variables). Parameters shared between
`p` and `q` get the sum of both roles, as in Tucker et al., appendix 8.3.

The value of every estimator here is the IWAE bound `log (1/K) Σ_k w_k`.

Each runs on TensorFlow and on TFP's JAX substrate with the same call
(`tfp_gradest._substrate`); on JAX, `jax.grad` of the loss gives `θ` (whatever the
target closes over) the same `Σ w̃ ∇θ log p`.

#### References

[1] Burda, Grosse & Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    https://arxiv.org/abs/1509.00519
[2] Tucker, Lawson, Gu & Maddison. Doubly Reparameterized Gradient Estimators
    for Monte Carlo Objectives. ICLR 2019. https://arxiv.org/abs/1810.04152
[3] Bornschein & Bengio. Reweighted Wake-Sleep. ICLR 2015.
    https://arxiv.org/abs/1406.2751
"""

import abc

from tfp_gradest import _substrate
from tfp_gradest._util import arguments
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import log_mean_exp, normalized_weights, weighted_sum

__all__ = ["IWAE", "IWAEDReG", "RWS", "RWSDReG", "DReG", "IWAESTL", "ImportanceWeightedEstimator"]


def _square(weights):
    return _substrate.of(weights).square(weights)


@register("iwae")
class IWAE(GradientEstimator):
    """The importance-weighted bound with its plain reparameterisation gradient.

    ```none
    L_K = log (1/K) Σ_k w_k,   ∇L_K = Σ_k w̃_k ∇ log w_k(g_φ(ε_k))
    ```

    Computed by differentiating `L_K` directly (no inner tape), which is the
    `a = w̃, b = -w̃` row of the table in this module's docstring. For
    `K = 1` it is the reparameterisation ELBO gradient. As `K` grows its
    φ-gradient's signal-to-noise ratio decays like `1/√K` (Rainforth et al. 2018).

    With a Csiszar `discrepancy_fn` `f` other than the reverse KL, the value is
    `-f(L_K)`, what `tfp.vi.monte_carlo_variational_loss` minimises for
    `importance_sample_size > 1`: `E[f(log (1/K) Σ_k w_k)]` bounds `f(log p(x))`
    from above for convex `f(exp(·))` (Jensen), and its pathwise gradient is
    unbiased for that bound's. It is not `D_f[p ‖ q]` for `K > 1`.
    """

    supports_discrepancy_fn = True

    def _objective(self, inputs):
        value = -inputs.discrepancy_fn(log_mean_exp(lw.pathwise_log_weights(inputs).log_weights))
        return value, value


class ImportanceWeightedEstimator(GradientEstimator):
    """Base of the surrogates `Σ_k w̃ log p̃ + a(w̃) log ŵ` (the `b = 0` rows of the module's table).

    A subclass defines `_path_coefficient(w̃) -> a(w̃)`; the gradient then takes
    one backward pass through the target (`path_weighted_surrogate`).
    """

    data_path = "path_weighted_surrogate"
    reverse_kl_only_because = " (it drops a score term whose mean is zero only there)"

    @abc.abstractmethod
    def _path_coefficient(self, weights):
        """`a(w̃)`, the weight of each sample's path term; zero where `w̃` is zero."""

    def _coefficients(self, log_weights):
        weights = normalized_weights(log_weights)
        return weights, self._path_coefficient(weights)

    def _objective(self, inputs):
        log_weights, surrogate = lw.path_weighted_surrogate(inputs, self._coefficients)
        return log_mean_exp(log_weights), surrogate


@register("iwae_dreg")
class IWAEDReG(ImportanceWeightedEstimator):
    """Doubly-reparameterised IWAE gradient (Tucker et al. 2019, eq. 7).

    ```none
    ∇_φ L_K ≈ Σ_k w̃_k² (∂ log w_k / ∂z_k) ∂z_k/∂φ,    ∇_θ L_K ≈ Σ_k w̃_k ∇_θ log p_θ(x, z_k)
    ```

    Unbiased; the φ-gradient's SNR grows like `√K`; at `K = 1` it is exactly STL,
    and it has zero variance when `q` is the exact posterior.
    """

    def _path_coefficient(self, weights):
        return _square(weights)


@register("rws")
class RWS(GradientEstimator):
    """Reweighted wake-sleep, wake-φ update: `∇_φ ≈ Σ_k w̃_k ∇_φ log q_φ(z_k)`.

    The `a = 0, b = +w̃` row of the module's table:

    ```none
    s = Σ_k w̃_k log p̃(x, z_k) + w̃_k log q̃(z_k)
    ```

    Fits `q` towards the posterior in the inclusive KL, `KL(p(z|x) || q)`; needs
    no reparameterisation (works for discrete latents). `θ` gets the IWAE
    gradient. The loss value is the negative IWAE bound.
    """

    data_path = "log_weight_terms"
    requires_reparameterization = False

    def _objective(self, inputs):
        terms = lw.log_weight_terms(inputs, with_path=False)
        weights = normalized_weights(terms.log_weights)
        surrogate = weighted_sum(weights, terms.target_log_prob + terms.surrogate_log_prob)
        return log_mean_exp(terms.log_weights), surrogate


@register("rws_dreg")
class RWSDReG(ImportanceWeightedEstimator):
    """Doubly-reparameterised wake-φ gradient (Tucker et al. 2019, eq. 9): `a(w̃) = w̃ - w̃²`."""

    def _path_coefficient(self, weights):
        return weights - _square(weights)


@register("dreg")
class DReG(ImportanceWeightedEstimator):
    """The DReG(α) family (Tucker et al. 2019, eq. 10): `a(w̃) = α w̃ + (1 - 2α) w̃²`.

    `α = 0` is IWAE-DReG and `α = 1` is RWS-DReG (exactly, on the same samples).

    Args:
      alpha: Python `float` in `[0, 1]`. Default value: `0.0`.
    """

    def __init__(self, alpha=0.0):
        self._alpha = arguments.check_real("alpha", alpha, 0.0, 1.0)

    @property
    def alpha(self):
        """Python `float` in `[0, 1]`, the family's interpolation weight."""
        return self._alpha

    def _path_coefficient(self, weights):
        return self._alpha * weights + (1.0 - 2.0 * self._alpha) * _square(weights)


@register("iwae_stl")
class IWAESTL(ImportanceWeightedEstimator):
    """STL applied to the IWAE bound: `a(w̃) = w̃`, score term dropped.

    **Biased for K > 1**: the dropped term `-Σ_k w̃_k ∇_φ log q_φ(z_k)` has zero
    mean only when `K = 1` (Tucker et al. 2019, §3). Kept for comparison; the
    tests detect its bias.
    """

    def _path_coefficient(self, weights):
        return weights
