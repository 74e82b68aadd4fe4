"""The local reparameterisation trick (LRT): the pre-activations' marginal, sampled per example."""

from keras import ops

from tfp_gradest.layers.estimators.base import LayerEstimator, register

__all__ = ["LocalReparameterization"]


@register
class LocalReparameterization(LayerEstimator):
    """Samples each pre-activation from its marginal, independently per example and unit.

    ```none
    m = x μ + μ_b,      v = x² σ² + σ_b²,      h = m + √v ⊙ ζ,      ζ ~ N(0, I)
    ```

    For a dense layer `h_b` given `x_b` is exactly `N(m_b, diag v_b)` under the
    weight posterior, and examples get independent draws, so the gradient
    terms of a minibatch are uncorrelated (Kingma, Salimans & Welling 2015,
    Section 2.3). A convolution's positions share weights (correlated
    pre-activations), so the trick would change the model there: refused.

    #### References

    [1] Kingma, Salimans & Welling. Variational Dropout and the Local
        Reparameterization Trick. 2015. https://arxiv.org/abs/1506.02557
    """

    name = "local_reparameterization"
    layer_kinds = ("dense",)
    why_not = (
        "The local reparameterisation trick samples each output independently, which is exact "
        "for dense layers only; for convolutions use 'auto', 'flipout' or 'r2g2'."
    )

    def sample(self, layer, inputs, linear_map, posterior):
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        variance = linear_map.apply(ops.square(inputs), ops.square(posterior.kernel_scale))
        if posterior.use_bias:
            mean = mean + posterior.bias_loc
            variance = variance + ops.square(posterior.bias_scale)
        noise = layer._noise(ops.shape(mean), inputs.dtype, per_example=True)
        return mean + ops.sqrt(variance) * noise
