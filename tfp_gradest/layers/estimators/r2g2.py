"""R2-G2: the reparameterisation forward pass with the Rao-Blackwellised backward pass."""

from tfp_gradest.layers.estimators.base import LayerEstimator, register
from tfp_gradest.r2g2 import gaussian_linear

__all__ = ["R2G2"]


@register
class R2G2(LayerEstimator):
    """RT's sample; the scale gradient's noise `ε` replaced by `E[ε | h]`.

    ```none
    ∂f/∂σ = Σ_b (P_bᵀ g_b) ⊙ E[ε | h_b]        (per-example conditioning)
    ```

    Unbiased because `g_b` depends on the noise only through `h_b` (Lam et al.
    2024, Definition 4.1); see `tfp_gradest.r2g2.gaussian_linear` for the
    solve. For a dense layer its backward pass is the local reparameterisation
    trick's formula under a shared-weight forward pass (Proposition 4.2).
    Uses the layer's `conditioning`, `cg_iterations`, `cg_tolerance` and
    `per_example_memory_limit`.

    #### References

    [1] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    """

    name = "r2g2"

    def sample(self, layer, inputs, linear_map, posterior):
        dtype = inputs.dtype
        kernel_noise = layer._noise(posterior.kernel_loc.shape, dtype)
        bias_noise = layer._noise(posterior.bias_loc.shape, dtype) if posterior.use_bias else None
        return gaussian_linear(
            inputs,
            posterior.kernel_loc,
            posterior.kernel_scale,
            kernel_noise,
            linear_map,
            posterior.bias_loc,
            posterior.bias_scale,
            bias_noise,
            **solver_options(layer),
        )


def solver_options(layer):
    """The layer's R2-G2 solver settings, as keyword arguments of `gaussian_linear`."""
    return {
        "conditioning": layer.conditioning,
        "cg_iterations": layer.cg_iterations,
        "cg_tolerance": layer.cg_tolerance,
        "per_example_memory_limit": layer.per_example_memory_limit,
    }
