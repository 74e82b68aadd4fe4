"""Flipout: pseudo-independent weight perturbations per example by random sign flips."""

import warnings

import keras
from keras import ops

from tfp_gradest.layers.estimators.base import LayerEstimator, register, sampled_bias

__all__ = ["Flipout", "flip_signs"]


def flip_signs(noise, inputs, num_outputs):
    """Per-example Rademacher signs `s_b` (input channels) and `r_b` (output channels).

    Shapes `[B, 1, ..., 1, C]`: one sign per example and channel, shared by all
    positions of a convolution, so that example `b` sees one perturbed weight
    tensor `ΔW ⊙ s_b r_bᵀ` at every position. `noise` is the `NoiseSource` handed to
    `sample`.
    """
    if isinstance(noise, keras.layers.Layer):  # 0.2 took the layer
        warnings.warn(
            "flip_signs(layer, ...) is deprecated: pass the `noise` source that "
            "LayerEstimator.sample receives, flip_signs(noise, inputs, num_outputs).",
            DeprecationWarning,
            stacklevel=2,
        )
        noise = noise._noise_source
    ones = [1] * (len(inputs.shape) - 2)
    batch = [ops.shape(inputs)[0]]  # a Tensor on TensorFlow when the batch size is unknown
    sign_in = noise.random_signs(batch + ones + [inputs.shape[-1]], inputs.dtype, per_example=True)
    sign_out = noise.random_signs(batch + ones + [num_outputs], inputs.dtype, per_example=True)
    return sign_in, sign_out


@register("flipout")
class Flipout(LayerEstimator):
    """One shared perturbation `ΔW = σ ⊙ ε`, decorrelated across examples by sign flips.

    ```none
    h_b = map(x_b, μ) + r_b ⊙ map(x_b ⊙ s_b, σ ⊙ ε) + μ_b + σ_b ⊙ ε_b,    s_b, r_b ~ Rademacher
    ```

    Example `b` uses the weights `μ + ΔW ⊙ s_b r_bᵀ`, which have the posterior's
    distribution, so each example's pre-activations have exactly the RT
    marginal; two examples' kernel perturbations are uncorrelated (their
    covariance is `E[s_a s_b] E[r_a r_b] = 0`), leaving only the shared bias
    noise `σ_b²` (Wen et al. 2018, Section 3). Costs a second forward map.

    #### References

    [1] Wen, Vicol, Ba, Tran & Grosse. Flipout: Efficient Pseudo-Independent
        Weight Perturbations on Mini-Batches. 2018. https://arxiv.org/abs/1803.04386
    """

    def sample(self, inputs, linear_map, posterior, noise):
        dtype = inputs.dtype
        perturbation = posterior.kernel_scale * noise.normal(posterior.kernel_loc.shape, dtype)
        bias = sampled_bias(posterior, noise, dtype)
        sign_in, sign_out = flip_signs(noise, inputs, posterior.kernel_loc.shape[-1])
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        return mean + sign_out * linear_map.apply(inputs * sign_in, perturbation) + bias
