"""The reparameterisation trick (RT): one weight sample shared by the whole batch."""

from tfp_gradest.layers.estimators.base import LayerEstimator, register, sampled_bias

__all__ = ["Reparameterization"]


@register
class Reparameterization(LayerEstimator):
    """`h = map(x, μ + σ ⊙ ε) + μ_b + σ_b ⊙ ε_b`, differentiated by automatic differentiation.

    ```none
    ∂f/∂μ = Σ_b P_bᵀ g_b,      ∂f/∂σ = (Σ_b P_bᵀ g_b) ⊙ ε,      g_b = ∂f/∂h_b
    ```

    (`P_b`: example `b`'s patches, its input row for a dense layer.) Every
    example sees the same `ε`, so the examples' gradient terms are correlated:
    pre-activations of two examples have covariance `Σ_i x_ai x_bi σ_i² + σ_b²`.

    #### References

    [1] Kingma & Welling. Auto-Encoding Variational Bayes. 2014. https://arxiv.org/abs/1312.6114
    [2] Blundell et al. Weight Uncertainty in Neural Networks. 2015. https://arxiv.org/abs/1505.05424
    """

    name = "reparameterization"

    def sample(self, layer, inputs, linear_map, posterior):
        noise = layer._noise(posterior.kernel_loc.shape, inputs.dtype)
        kernel = posterior.kernel_loc + posterior.kernel_scale * noise
        return linear_map.apply(inputs, kernel) + sampled_bias(layer, posterior, inputs.dtype)
