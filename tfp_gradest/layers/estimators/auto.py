"""`auto`: picks a layer's gradient estimator at build time from its static shapes."""

import math

from tfp_gradest.layers.estimators import base

__all__ = ["Auto", "choose"]


def layer_sizes(layer, input_shape):
    """`(P, k)`: output positions per example (`None` if unknown) and weights per output unit, bias included.

    Called after the layer built its posterior. A dense layer on `[B, D]`
    inputs has one position; on `[B, T, D]` inputs, `T`.
    """
    spatial = layer.compute_output_shape(tuple(input_shape))[1:-1]
    positions = math.prod(spatial) if all(d is not None for d in spatial) else None
    weights = math.prod(layer.kernel_loc.shape[:-1]) + int(layer.use_bias)
    return positions, weights


def choose(layer_kind, positions=None, weights=None):
    """The estimator name `auto` picks for a layer of this kind and these sizes."""
    del weights  # kept in the signature: the R2-G2 rule of `Auto` would use it
    if layer_kind == "dense" and positions == 1:
        return "local_reparameterization"
    return "flipout"


@base.register
class Auto(base.LayerEstimator):
    """The default: the estimator with the lowest predicted work-normalised variance for this layer.

    Decided once per layer at build time from static shapes (`layer.resolved_gradient_estimator`
    tells which); `get_config` keeps `"auto"`.

    * Dense layers on `[B, D]` inputs: the local reparameterisation trick. It samples each
      example's pre-activations independently (the lowest variance of all:
      the minibatch terms are uncorrelated) and costs two matmuls, less than
      RT's weight sample (measured 0.57x RT's step time, 1/180 of its
      top-layer variance, `benchmarks/layers.py`).
    * Convolutions (LRT does not apply), and dense layers on `[B, T, D]`
      inputs (where the LRT would give each row its own weights): Flipout.
      It removes the correlation between examples at about twice a layer's
      cost. R2-G2 was the candidate for deep layers: per example it replaces
      `ε` by its projection on the `P`-dimensional row space of
      `A = P_b diag(σ)` (`P` output positions, `k` weights per filter); for
      isotropic `ε` the projection keeps a fraction `P / k` of its energy, so
      that example's noise variance shrinks by up to `k / P` (less where other
      layers' noise dominates the gradient), while the Gram matrices add
      `P² k` multiply-adds per example and filter to the layer's `3 P k`
      (`1 + P / 3` times the layer, run in float64). Measured in
      `benchmarks/layers.py` (README, "Choosing a layer estimator"): its
      work-normalised variance did not beat Flipout's on the benchmark CNN's
      layers, and Flipout with R2-G2's backward was not shown unbiased at the
      layer level in float32, so `auto` does not pick either; both stay
      available by name where the user wants the variance reduction.
    """

    name = "auto"

    def resolve(self, layer, input_shape):
        positions, weights = layer_sizes(layer, input_shape)
        return base.get(choose(layer.layer_kind, positions, weights), layer.layer_kind)

    def sample(self, layer, inputs, linear_map, posterior):
        return self.resolve(layer, tuple(inputs.shape)).sample(layer, inputs, linear_map, posterior)
