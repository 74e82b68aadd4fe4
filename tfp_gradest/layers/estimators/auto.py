"""`auto`: picks a layer's gradient estimator at build time from its static shapes."""

import math

from tfp_gradest.layers.estimators import base

__all__ = ["Auto", "choose"]

# Conv layers whose predicted R2-G2 variance gain k / P reaches this use the
# R2-G2 family; see `Auto` for the derivation and benchmarks/layers.py for the check.
GAIN_THRESHOLD = 4.0
# Above this many output positions per example the Gram matrices (P^2 per
# example and filter) cost more than the layer itself many times over.
MAX_POSITIONS = 64


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
    if layer_kind == "dense" and positions == 1:
        return "local_reparameterization"
    if (
        positions is not None
        and positions <= MAX_POSITIONS
        and weights >= GAIN_THRESHOLD * positions
    ):
        return "flipout_r2g2"
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
    * Convolutions (LRT does not apply): per example `P` output positions and
      `k` weights per filter. R2-G2 replaces `ε` in an example's scale
      gradient by its projection on the `P`-dimensional row space of
      `A = P_b diag(σ)`; for isotropic `ε` the projection keeps a fraction
      `P / k` of its energy, so the example's noise variance shrinks by up
      to `k / P` (less where other layers' noise dominates the gradient).
      Its extra cost per example and filter is the Gram matrix, `P² k`
      multiply-adds against the layer's `3 P k`: `1 + P / 3` times the
      layer. So R2-G2 pays when `k / P` is large and `P` small: the deep
      layers. Flipout removes the correlation between examples at twice a
      layer's cost, which on conv layers with a batch of 64 was worth it at
      every depth measured. `auto` picks Flipout with R2-G2's backward
      (`flipout_r2g2`) when `k ≥ GAIN_THRESHOLD · P` and `P ≤ MAX_POSITIONS`,
      Flipout otherwise (also when the spatial size is unknown). A dense
      layer on `[B, T, D]` inputs (the LRT would give each row its own
      weights) follows the same rule with `P = T`, `k = D + 1`.
    """

    name = "auto"

    def resolve(self, layer, input_shape):
        positions, weights = layer_sizes(layer, input_shape)
        return base.get(choose(layer.layer_kind, positions, weights), layer.layer_kind)

    def sample(self, layer, inputs, linear_map, posterior):
        return self.resolve(layer, tuple(inputs.shape)).sample(layer, inputs, linear_map, posterior)
