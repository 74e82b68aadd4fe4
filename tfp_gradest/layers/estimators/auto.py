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

    The local reparameterisation trick for dense layers on `[B, D]` inputs, the
    reparameterisation trick (RT) for everything else (see `Auto` for the
    measurements behind this). `weights` is accepted so that callers can pass
    `layer_sizes`; it no longer changes the choice.
    """
    del weights  # R2-G2 is not picked by default: see `Auto`.
    if layer_kind == "dense" and positions == 1:
        return "local_reparameterization"
    return "reparameterization"


@base.register
class Auto(base.LayerEstimator):
    """The default: the estimator that gives the best held-out result per second of training.

    Decided once per layer at build time from static shapes (`layer.resolved_gradient_estimator`
    tells which); `get_config` keeps `"auto"`.

    * Dense layers on `[B, D]` inputs: the local reparameterisation trick. It samples each
      example's pre-activations independently (the lowest variance of all:
      the minibatch terms are uncorrelated) and costs two matmuls, less than
      RT's weight sample (measured 0.42x RT's step time, 1/219 of its
      top-layer variance, `benchmarks/layers.py`).
    * Convolutions (LRT does not apply), and dense layers on `[B, T, D]`
      inputs (where the LRT would give each row its own weights): RT.
      R2-G2 replaces an example's `ε` by its projection on the `P`-dimensional
      row space of `A = P_b diag(σ)` (`P` output positions, `k` weights per
      filter); for isotropic `ε` that keeps a fraction `P / k` of its energy,
      so the per-example variance of the scale gradient falls by up to
      `k / P`, and the Gram matrices cost `P² k` per example and filter on
      top of the layer's `3 P k`. An earlier `auto` picked R2-G2 where
      `k / P > 1 + P / 3` (gain above cost), which minimises that layer's
      work-normalised variance. Measured end to end, it was the wrong
      default (`python benchmarks/end_to_end.py`, Bayesian CNN on digits,
      5 seeds): with R2-G2 on the one conv layer the rule picked (P = 4,
      k = 73) the model's step cost 2.1x RT's, the test log-likelihood after
      30 epochs was the same (-0.2387 +- 0.0072 vs RT -0.2382 +- 0.0085),
      and at equal wall-clock RT was ahead by 0.051 +- 0.008 nats (paired).
      Flipout was second at equal time, and never lowered a conv layer's
      variance by more than 1.19x in `benchmarks/layers.py`. So a lower
      per-layer gradient variance did not buy a better model per step, and
      R2-G2's exact solves cost more than they gain; it stays available as
      `gradient_estimator="r2g2"` for models whose training is limited by a
      conv layer's scale-gradient noise (measure with
      `tge.callbacks.GradientVarianceMonitor`).
    """

    name = "auto"

    def resolve(self, layer, input_shape):
        positions, weights = layer_sizes(layer, input_shape)
        return base.get(choose(layer.layer_kind, positions, weights), layer.layer_kind)

    def sample(self, layer, inputs, linear_map, posterior):
        return self.resolve(layer, tuple(inputs.shape)).sample(layer, inputs, linear_map, posterior)
