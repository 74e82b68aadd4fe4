"""The reparameterisation trick (RT) for a layer: one weight sample shared by the whole batch."""

import warnings

from tfp_gradest.layers.estimators.base import LayerEstimator, register, sampled_bias

__all__ = ["WeightReparameterization"]


@register("reparameterization")
class WeightReparameterization(LayerEstimator):
    """`h = map(x, μ + σ ⊙ ε) + μ_b + σ_b ⊙ ε_b`, differentiated by automatic differentiation.

    ```none
    ∂f/∂μ = Σ_b P_bᵀ g_b,      ∂f/∂σ = (Σ_b P_bᵀ g_b) ⊙ ε,      g_b = ∂f/∂h_b
    ```

    (`P_b`: example `b`'s patches, its input row for a dense layer.) Every
    example sees the same `ε`, so the examples' gradient terms are correlated:
    pre-activations of two examples have covariance `Σ_i x_ai x_bi σ_i² + σ_b²`.

    The name says what is reparameterised: the *weights*, one sample per call shared by
    the batch (what `tfp.layers.DenseReparameterization` does), as opposed to the local
    reparameterisation trick's per-example pre-activations, and to
    `tge.estimators.Reparameterization`, the ELBO-level reparameterisation gradient of a
    `tfp.vi` fit. Its registered name, the one layers take, stays `"reparameterization"`
    (`gradient_estimator="reparameterization"`). `tge.layers.estimators.Reparameterization`
    is a deprecated alias of this class (0.2's name), kept for one release.

    #### References

    [1] Kingma & Welling. Auto-Encoding Variational Bayes. 2014. https://arxiv.org/abs/1312.6114
    [2] Blundell et al. Weight Uncertainty in Neural Networks. 2015. https://arxiv.org/abs/1505.05424
    """

    def sample(self, inputs, linear_map, posterior, noise):
        epsilon = noise.normal(posterior.kernel_loc.shape, inputs.dtype)
        kernel = posterior.kernel_loc + posterior.kernel_scale * epsilon
        return linear_map.apply(inputs, kernel) + sampled_bias(posterior, noise, inputs.dtype)


def deprecated_alias(module_name, name):
    """0.2's class name `Reparameterization`, with a `DeprecationWarning` (module `__getattr__`)."""
    if name != "Reparameterization":
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    warnings.warn(
        "tge.layers.estimators.Reparameterization is deprecated: it is now called "
        "tge.layers.estimators.WeightReparameterization (one weight sample shared by the "
        "batch; not tge.estimators.Reparameterization). The name "
        'gradient_estimator="reparameterization" is unchanged.',
        DeprecationWarning,
        stacklevel=3,
    )
    return WeightReparameterization


def __getattr__(name):
    return deprecated_alias(__name__, name)
