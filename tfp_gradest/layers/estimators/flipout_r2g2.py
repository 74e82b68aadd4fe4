"""Flipout's forward pass with R2-G2's Rao-Blackwellised backward pass for the perturbation."""

import tensorflow as tf

from tfp_gradest.layers.estimators.base import LayerEstimator, register, sampled_bias
from tfp_gradest.layers.estimators.flipout import flip_signs
from tfp_gradest.layers.estimators.r2g2 import solver_options
from tfp_gradest.r2g2 import gaussian_linear

__all__ = ["FlipoutR2G2"]


@register
class FlipoutR2G2(LayerEstimator):
    """Flipout samples; the perturbation's scale gradient conditioned per example.

    ```none
    h_b = map(x_b, μ) + r_b ⊙ map(x_b ⊙ s_b, σ ⊙ ε) + bias
    ∂f/∂σ = Σ_b (P̃_bᵀ (r_b ⊙ g_b)) ⊙ E[ε | h̃_b],     P̃_b = patches(x_b ⊙ s_b),  h̃_b = P̃_b (σ ⊙ ε)
    ```

    Given the signs, example `b`'s perturbation `h̃_b` is a Gaussian seen
    through the linear map of its sign-flipped patches, and `g_b` depends on
    `ε` only through `h̃_b`; so conditioning each example's term on its own
    `h̃_b` is the R2-G2 argument again, with `P̃_b` for `P_b` (the input
    flips multiply weight rows by ±1, so the Gram matrices are unchanged).
    It equals Flipout when the solve is skipped (`P ≥ k`). Flipout removes the correlation
    between examples, R2-G2 the part of each example's noise its output does
    not reveal. The bias keeps Flipout's shared draw (reparameterisation
    gradient).

    #### References

    [1] Wen et al. Flipout. 2018. https://arxiv.org/abs/1803.04386
    [2] Lam, Bui, Deligiannidis & Teh. Rao-Blackwellised Reparameterisation
        Gradients. 2024. https://arxiv.org/abs/2506.07687
    """

    name = "flipout_r2g2"

    def sample(self, layer, inputs, linear_map, posterior):
        dtype = inputs.dtype
        kernel_noise = layer._noise(posterior.kernel_loc.shape, dtype)
        bias = sampled_bias(layer, posterior, dtype)
        sign_in, sign_out = flip_signs(layer, inputs, posterior.kernel_loc.shape[-1])
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        perturbation = gaussian_linear(
            inputs * sign_in,
            tf.zeros_like(posterior.kernel_loc),  # the means' gradient comes from `mean`
            posterior.kernel_scale,
            kernel_noise,
            linear_map,
            **solver_options(layer),
        )
        return mean + sign_out * perturbation + bias
