"""The local reparameterisation trick (LRT): the pre-activations' marginal, sampled per example."""

import keras
from keras import ops

from tfp_gradest.layers.estimators.base import LayerEstimator, register

__all__ = ["LocalReparameterization"]


@register("local_reparameterization")
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

    Two numerical safeguards (in float32 and float64 neither changes a value or a
    gradient where `v > 0`):

    * `√v` gets the gradient `0` where `v = 0` (autodiff's `1/(2√v)` would be `∞`,
      and `∞ · 0 = NaN` would reach every scale of the layer). That is the exact
      gradient for a zero input row without a bias (a blank example, padding, a
      dead ReLU row): `h_b = m_b` whatever `σ` is. Where `v` underflows to `0`
      instead (every `σ` below ~1e-19 in float32), the likelihood's gradient
      w.r.t. `σ` is dropped: through the softplus it is about `σ |ζ|` times the
      mean's gradient, negligible beside the KL term's (about `-1`, from `-log σ`).
    * Under a mixed-precision policy (float16 or bfloat16 compute dtype), `v` and
      `√v` are computed in float32 and only `√v` is cast back: in float16, `σ²`
      rounds to 0 for every `σ` below ~2.4e-4, and `x²` overflows above 256.

    #### References

    [1] Kingma, Salimans & Welling. Variational Dropout and the Local
        Reparameterization Trick. 2015. https://arxiv.org/abs/1506.02557
    """

    layer_kinds = ("dense",)
    why_not = (
        "The local reparameterisation trick samples each output independently, which is exact "
        "for dense layers only; for convolutions use 'auto', 'flipout' or 'r2g2'."
    )

    def check(self, layer_kind, input_shape=None, layer_name=None):
        """Dense layers on `[B, D]` inputs only: on `[B, ..., D]` inputs sampling every row
        independently would give each position of an example (e.g. each time step) its own
        weights, a different model from `keras.layers.Dense`'s shared weights."""
        super().check(layer_kind, input_shape, layer_name)
        if input_shape is not None and len(input_shape) > 2:
            raise ValueError(
                "gradient_estimator='local_reparameterization' samples every output row "
                "independently, which for inputs of rank > 2 would give each position of an "
                "example (e.g. each time step) its own weights: a different model from "
                "keras.layers.Dense's shared weights. Use 'r2g2', 'flipout' or "
                f"'reparameterization'. Received: input_shape={tuple(input_shape)}"
            )

    def sample(self, inputs, linear_map, posterior, noise):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        wide = _VARIANCE_DTYPES.get(dtype, dtype)
        mean = linear_map.apply(inputs, posterior.kernel_loc)
        variance = linear_map.apply(
            ops.square(ops.cast(inputs, wide)), ops.square(ops.cast(posterior.kernel_scale, wide))
        )
        if posterior.use_bias:
            mean = mean + posterior.bias_loc
            variance = variance + ops.square(ops.cast(posterior.bias_scale, wide))
        zeta = noise.normal(ops.shape(mean), inputs.dtype, per_example=True)
        return mean + ops.cast(sqrt_with_zero_gradient_at_zero(variance), dtype) * zeta


# Under mixed precision the variance and its square root are computed in float32.
_VARIANCE_DTYPES = {"float16": "float32", "bfloat16": "float32"}


def sqrt_with_zero_gradient_at_zero(x):
    """`√x` for `x ≥ 0`, whose gradient is `1/(2√x)` where `x > 0` and `0` where `x = 0`.

    The double `where`: the inner one keeps `sqrt` away from 0, so its derivative is
    finite everywhere (a single `where` would still multiply its `∞` by the zero
    upstream gradient of the unused branch, giving NaN); the outer one selects the
    result. Where `x > 0` both select the plain `sqrt`, so the value and the
    gradient there are exactly those of `ops.sqrt`.
    """
    x = ops.convert_to_tensor(x)
    positive = ops.greater(x, 0)
    safe = ops.where(positive, x, ops.ones_like(x))
    return ops.where(positive, ops.sqrt(safe), ops.zeros_like(x))
