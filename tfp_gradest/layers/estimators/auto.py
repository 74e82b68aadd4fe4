"""`auto`: picks a layer's gradient estimator at build time from its static shapes."""

import math

from tfp_gradest.layers.estimators import base

__all__ = ["Auto", "choose"]


def layer_sizes(layer, input_shape):
    """`(P, k)`: output positions per example (`None` if unknown) and weights per output unit,
    bias included.

    Called after the layer built its posterior. A dense layer on `[B, D]`
    inputs has one position; on `[B, T, D]` inputs, `T`.
    """
    spatial = layer.compute_output_shape(tuple(input_shape))[1:-1]
    positions = math.prod(spatial) if all(d is not None for d in spatial) else None
    weights = math.prod(layer.kernel_loc.shape[:-1]) + int(layer.use_bias)
    return positions, weights


def choose(layer_kind, positions=None, weights=None):
    """The estimator name `auto` picks for a layer of this kind and these sizes.

    R2-G2 where its predicted variance gain `k / P` exceeds its predicted
    cost relative to the layer, `1 + P / 3` (see `Auto`); RT otherwise.
    """
    if layer_kind == "dense" and positions == 1:
        return "local_reparameterization"
    if positions is not None and weights / positions > 1 + positions / 3:
        return "r2g2"
    return "reparameterization"


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
      inputs (where the LRT would give each row its own weights), with `P`
      output positions per example and `k` weights per filter (bias
      included). R2-G2 replaces an example's `ε` by its projection on the
      `P`-dimensional row space of `A = P_b diag(σ)`; for isotropic `ε` the
      projection keeps a fraction `P / k` of its energy, so the example's
      noise variance falls by up to `k / P` (less where other layers' noise
      dominates). The Gram matrices cost `P² k` multiply-adds per example and
      filter on top of the layer's `3 P k` (forward and two backward
      products): `1 + P / 3` times the layer. R2-G2 is picked when
      `k / P > 1 + P / 3` — its variance gain outweighs its cost even if the
      layer were the whole model, so the work-normalised variance improves;
      RT otherwise (also for unknown spatial sizes). Flipout is never picked:
      on the benchmark CNN's conv layers it reduced the variance by at most
      1.19x for 0.95-1.54x the step time. Measured check (README, "Choosing a
      layer estimator"): the rule picks the best fixed choice on all four conv
      layers of `benchmarks/layers.py`'s CNN.
    """

    name = "auto"

    def resolve(self, layer, input_shape):
        positions, weights = layer_sizes(layer, input_shape)
        return base.get(choose(layer.layer_kind, positions, weights), layer.layer_kind)

    def sample(self, layer, inputs, linear_map, posterior):
        return self.resolve(layer, tuple(inputs.shape)).sample(layer, inputs, linear_map, posterior)
