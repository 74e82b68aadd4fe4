"""Generalized doubly-reparameterised gradients (Bauer & Mnih, ICML 2021).

IWAE-DReG (Tucker et al. 2019) removes the score term `-w̃_k ∂_φ log q_φ(z_k)` of the
IWAE gradient by the reparameterisation identity, for `f` a function of `z` alone:

```none
E_q[f(z) ∂_ψ log q_ψ(z)] = E_q[∂_z f(z) · ∂z/∂ψ]         (z = h(ε; ψ))                (1)
```

Generalized DReG applies the same identity to every score function in the total
derivative of `log w`, not only the surrogate's direct one.

**Hierarchical surrogates.** With `q(z) = Π_l q_l(z_l | ψ_l)` and conditional parameters
`ψ_l = ψ_l(z_pa(l), φ)` computed from earlier latents (a `JointDistribution` whose
later part depends on an earlier one), the total derivative of `log w_k` is

```none
d log w/dφ = Σ_l (∂_{z_l} log p - ∂_{z_l} log q_l(z_l; ψ_l fixed)) dz_l/dφ
             - Σ_l ∂_ψ log q_l(z_l | ψ_l) · (∂ψ_l/∂φ + ∂ψ_l/∂z_pa dz_pa/dφ)
```

The second line holds every score term: the direct one (through `∂ψ_l/∂φ`) and the
conditional-density ones (through the parents `z_pa`, which IWAE-DReG keeps as path
terms). Weighted by `w̃_k`, each level's score has expectation, by (1) applied to
`q_l` with everything but `z_l` and its descendants fixed,
`E[(d w̃_k/dz_l) · dz_l/dφ]`, where `d/dz_l` moves the descendants with `z_l` (noise
fixed) and `d w̃_k/dz_l = w̃_k (1 - w̃_k) d log w_k/dz_l`. Summing the levels:

```none
∇_φ ≈ Σ_k  w̃_k (∂_z log w_k |ψ fixed) · dz_k/dφ  -  w̃_k (1 - w̃_k) Σ_l ∂_{z_l} log w_k · u_{l,k}
u_l = dz_l/dφ + Σ_{m ∈ pa(l)} (∂z_l/∂ψ_l)(∂ψ_l/∂z_m) u_m
```

(`u_l` counts every path from `φ` to `z_l` once per latent it crosses; `∂_z` is
the partial derivative of the density functions.) No score term is left. This is
`conditional_scores="transform"`. The other unbiased choice, `"keep"`, transforms
only the direct scores and keeps the conditional ones as path terms: (1) applied to
the joint `q` with `z = g_φ(ε)` through the whole sampling chain gives
`Σ_k w̃_k² ∂_z log w_k · dz_k/dφ`, IWAE-DReG's φ-gradient (which this package's
IWAE-DReG computes on a hierarchical `JointDistribution` too: its `∂_z log q` moves
the conditionals' parameters with their parents). Dropping the conditional scores
instead (IWAE-DReG with each conditional's parameters stopped, `ψ̄_l`) is biased; the
tests detect it. `"keep"` is the default: wherever measured (a two-level Gaussian
model, the hierarchical VAE) its φ-gradient had IWAE-DReG's variance and `"transform"`'s
more, by orders of magnitude on the Gaussian model, while θ's treatment is the same in
both (docs/which_estimator.md and the Results page: `benchmarks/new_estimators.py`,
`benchmarks/gdreg_variance.py`). Bauer & Mnih transform the conditional scores too; on
these models that raises the variance rather than lowering it.

**Model parameters θ in a latent density.** A target factor `p_θ(z_a | z_pa(a))` over
a latent drawn from `q` (the hierarchical VAE's prior `p(z_l | z_{l+1})`) contributes
`w̃_k ∂_θ log p_θ(z_a | z_pa)` to the IWAE gradient: a score function of a
distribution that is not the sampling one. By (1) under `p_θ` and a change of measure
(`v_a = ∂z_a/∂θ`, the reparameterisation of `p_θ(· | z_pa)` read at `z_a`):

```none
E_q[f ∂_θ log p_θ(z_a|z_pa)] = E_q[(∂_{z_a} f + f ∂_{z_a} log q(z) - f ∂_{z_a} log p_θ) · v_a]
   ⇒  ∇_θ ≈ Σ_k w̃_k ∇_θ[log p(x,z_k) - Σ_a log p_a]                    (everything else)
           + Σ_a [w̃_k ∂_{z_a} (log p(x,z_k) - log p_a) - w̃_k² ∂_{z_a} log w_k] · v_a
```

The target declares these factors with an attribute: `target_log_prob_fn.
latent_distributions(*z)` (called like the target) returns `{flat part index:
distribution}`, each the exact factor of `log p(x, z)` for that part, built from the
latents it is given (`HierarchicalVAE.target_log_prob_fn` has it). Parameters of the
target outside those factors (a decoder's likelihood `p(x | z_1)`) get IWAE's
`Σ_k w̃_k ∇_θ log p`; with no declared factor, all of `θ` gets it.

**What it reduces to.** For a surrogate with no conditional parts (a plain
distribution, or a joint one whose parts have no parents) `u = dz/dφ` and the
φ-gradient is `Σ_k w̃_k² ∂_z log w_k · dz_k/dφ`: IWAE-DReG's, on the same samples.
With no declared latent factor `θ` gets IWAE-DReG's (= IWAE's) gradient too, so GDReG
then equals IWAE-DReG (same seed). For `K = 1` (`w̃ = 1`) every transformed term
vanishes: with `"transform"` the φ-gradient is `(∂_z log w |ψ fixed) · dz/dφ`, which
for a hierarchical surrogate is *not* STL (STL keeps the conditional scores and has
zero variance at the exact posterior; this does not); with `"keep"` it is STL.
A surrogate that is not a `JointDistribution` is one block: its conditional
structure, if any, is invisible here and it gets IWAE-DReG's gradient.
The value is the IWAE bound `log (1/K) Σ_k w_k`.

Cost: one forward and one backward pass of the target at stopped samples (four copies
in one vector-Jacobian product), and `L - 1` rebuilds of the surrogate's conditionals
for `u`.

#### Examples

```python
jd = tfd.JointDistributionSequential([
    tfd.Normal(m2, s2),                         # q(z2)
    lambda z2: tfd.Normal(b * z2 + m1, s1),     # q(z1 | z2)
])
def target(z2, z1):
    return tfd.Normal(0., 1.).log_prob(z2) + tfd.Normal(a * z2, 1.).log_prob(z1) + ...
target.latent_distributions = lambda z2, z1: {1: tfd.Normal(a * z2, 1.)}
loss = tge.estimators.get("gdreg").loss(target, jd, importance_sample_size=8, seed=0)
```

#### References

[1] Bauer & Mnih. Generalized Doubly Reparameterized Gradient Estimators. ICML 2021.
    https://arxiv.org/abs/2101.11046
[2] Tucker, Lawson, Gu & Maddison. Doubly Reparameterized Gradient Estimators for
    Monte Carlo Objectives. ICLR 2019. https://arxiv.org/abs/1810.04152
[3] Figurnov, Mohamed & Mnih. Implicit Reparameterization Gradients. NeurIPS 2018.
    https://arxiv.org/abs/1805.08498
"""

from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator, register
from tfp_gradest.estimators.importance_weights import log_mean_exp, normalized_weights, weighted_sum

__all__ = ["GDReG"]


CONDITIONAL_SCORES = ("transform", "keep")


@register("gdreg")
class GDReG(GradientEstimator):
    """Generalized DReG (Bauer & Mnih 2021): no score term left, for `φ` and for `θ`.

    ```none
    transform:  s = Σ_k  w̃_k (log p̃_direct + log ŵ_ψ + Σ_a log r̂_a)  -  w̃_k (1 - w̃_k) log ŵ_u
                         -  w̃_k² Σ_a log ŵ_a
    keep:       s = Σ_k  w̃_k (log p̃_direct + Σ_a log r̂_a)  +  w̃_k² log ŵ  -  w̃_k² Σ_a log ŵ_a
    ```

    with the fields of `tfp_gradest._util.log_weights.ConditionalPathTerms`
    (`direct_target_log_prob`, `path_log_weights` (`ŵ_ψ`), `prior_path_rest` (`r̂_a`),
    `score_path_log_weights` (`ŵ_u`), `full_path_log_weights` (`ŵ`),
    `prior_path_log_weights` (`ŵ_a`)); the module docstring derives them. Both are
    unbiased for the IWAE gradient of every parameter, and equal to IWAE-DReG for a
    surrogate without conditional parts and a target without declared latent factors.

    Args:
      conditional_scores: `"transform"` (Bauer & Mnih's treatment: the score terms of
        the surrogate's conditionals through their parents are doubly reparameterised
        too) or `"keep"` (they stay path terms, as in IWAE-DReG, whose φ-gradient this
        then is exactly, on any surrogate; only `θ`'s latent factors are treated).
        Default value: `"keep"` (the lower variance where measured: module docstring).
    """

    data_path = "conditional_path_terms"
    reverse_kl_only_because = " (it drops score terms whose mean is zero only there)"

    def __init__(self, conditional_scores="keep"):
        if not isinstance(conditional_scores, str) or conditional_scores not in CONDITIONAL_SCORES:
            raise ValueError(
                f"`conditional_scores` must be one of {CONDITIONAL_SCORES}. "
                f"Received: conditional_scores={conditional_scores!r}"
            )
        self._conditional_scores = conditional_scores

    @property
    def conditional_scores(self):
        """`"transform"` or `"keep"`: what happens to the conditionals' score terms."""
        return self._conditional_scores

    def _objective(self, inputs):
        transform = self._conditional_scores == "transform"
        terms = lw.conditional_path_terms(inputs, with_crossing_paths=transform)
        weights = normalized_weights(terms.log_weights)
        squared = weights * weights
        direct = terms.direct_target_log_prob + terms.prior_path_rest
        if transform:
            surrogate = weighted_sum(weights, direct + terms.path_log_weights) - weighted_sum(
                weights - squared, terms.score_path_log_weights
            )
        else:
            surrogate = weighted_sum(weights, direct) + weighted_sum(
                squared, terms.full_path_log_weights
            )
        surrogate = surrogate - weighted_sum(squared, terms.prior_path_log_weights)
        return log_mean_exp(terms.log_weights), surrogate
