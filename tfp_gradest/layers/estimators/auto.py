"""`auto`: picks a layer's gradient estimator at build time from its static shapes."""

import math
import warnings

from tfp_gradest.layers.estimators import base

__all__ = ["Auto", "choose"]

_NOT_GIVEN = object()


def output_positions(layer, input_shape):
    """Output positions per example (`None` if unknown): 1 for a dense layer on `[B, D]`
    inputs, `T` on `[B, T, D]`, the output's spatial size for a convolution."""
    spatial = layer.compute_output_shape(tuple(input_shape))[1:-1]
    return math.prod(spatial) if all(d is not None for d in spatial) else None


def choose(layer_kind, positions=None, weights=_NOT_GIVEN):
    """The estimator name `auto` picks for a layer of this kind with `positions` output
    positions per example (`None`: unknown).

    The local reparameterisation trick for dense layers on `[B, D]` inputs, the
    reparameterisation trick (RT) for everything else (see `Auto`).
    `weights` is deprecated (it no longer changed the choice).
    """
    if weights is not _NOT_GIVEN:
        warnings.warn(
            "choose(layer_kind, positions, weights): `weights` is deprecated and ignored "
            "(it does not change the choice); write choose(layer_kind, positions).",
            DeprecationWarning,
            stacklevel=2,
        )
    if layer_kind == "dense" and positions == 1:
        return "local_reparameterization"
    return "reparameterization"


@base.register("auto")
class Auto(base.LayerEstimator):
    """The default: the estimator that gives the best held-out result per second of training.

    Decided once per layer at build time from static shapes (`layer.resolved_gradient_estimator`
    tells which); the layer's `get_config` keeps `"auto"`.

    * Dense layers on `[B, D]` inputs: the local reparameterisation trick, which samples
      each example's pre-activations independently (the lowest variance: the minibatch
      terms are uncorrelated) and costs less than RT's weight sample.
    * Everything else (convolutions, where the LRT does not apply, and dense layers on
      `[B, T, D]` inputs, where it would give each row its own weights): RT.

    R2-G2 and Flipout are not picked: measured end to end, a lower per-layer variance did not
    buy a better model per second of training. The measurements, and the first rule that
    picked R2-G2 for deep conv layers: docs/design/auto.md (`benchmarks/layers.py`,
    `benchmarks/end_to_end.py`).
    """

    def resolve(self, layer, input_shape):
        return base.get(choose(layer.layer_kind, output_positions(layer, input_shape)))
