"""Path gradients of normalising-flow surrogates at the cost of the forward pass.

The path-weighted estimators (STL and the DReG family, `path_weighted_surrogate`)
need the score of the stopped surrogate at its own samples,
`∇z log q_φ̄(z)`. Evaluating `q.log_prob(z)` at a fresh copy of `z` and
differentiating it (what `path_weighted_vjp` does for every other surrogate) runs
the flow's INVERSE pass: for a `tfd.TransformedDistribution` built from coupling
layers that is a second evaluation of every conditioner network, layer after
layer from the output back to the noise.

Vaitl, Winkler, Richter & Kessel (ICLR 2024) compute the same score recursively,
alongside the forward pass. For `z = T_L ∘ ... ∘ T_1(ε)`, with `x_0 = ε`,
`x_l = T_l(x_{l-1})` and `g_l = ∇ log q_l(x_l)` the score of the density of `x_l`
(every parameter stopped):

```none
log q_l(x_l) = log q_{l-1}(x_{l-1}) - log|det J_l(x_{l-1})|
g_0 = ∇ε log q_0(ε)
g_l = J_l(x_{l-1})^{-T} (g_{l-1} - ∇ log|det J_l(x_{l-1})|)
```

and `∇z log q(z) = g_L` exactly (the chain rule through `x_{l-1} = T_l^{-1}(x_l)`
and the inverse function theorem, `J_{T^{-1}}(x_l) = J_l(x_{l-1})^{-1}`). Each
layer's product with `J_l^{-T}` is cheap when the layer has structure:

| layer                  | `J^{-T} w`                                                   |
|------------------------|--------------------------------------------------------------|
| `tfb.Shift`            | `w`                                                          |
| `tfb.Scale`            | `w / scale`                                                  |
| `tfb.Permute`          | `w` permuted as `x` is (`J` is a permutation matrix)         |
| `tfb.RealNVP`          | `u_B = J_h^{-T} w_B` (the elementwise inner bijector `h`),   |
| (`y_A = x_A`,          | `u_A = w_A - (∂y_B/∂x_A)^T u_B`: ONE vector-Jacobian product |
| `y_B = h_{x_A}(x_B)`)  | through the conditioner, at the activations of the forward   |
|                        | pass that draws the sample                                   |
| `tfb.Chain`            | the recursion over its layers                                |

So the sample, the value `log q(z) = log q_0(ε) - Σ log|det J_l|` and the score
come out of one forward pass plus one backward pass through each conditioner; the
inverse pass (a second evaluation of every conditioner, plus its backward pass) is
gone, and no bijector's `inverse` is ever called, so TFP's inverse cache (keyed by
tensor identity) cannot hand back a stale `ε`.

Which route is taken (`flow_route`): this one when the surrogate is a
`TransformedDistribution` with a vector event whose bijector is built only from
the layers of the table (`RealNVP` with an elementwise inner bijector:
`shift_and_log_scale_fn`, or a `bijector_fn` returning `Shift`/`Scale`/`Chain`s
of them); otherwise `None`, and the caller evaluates `q.log_prob(z)` as before.
Autoregressive layers keep the inverse route on purpose: for a
`MaskedAutoregressiveFlow` sampled forward the inverse is already one pass (its
conditioner reads the output `y`, so the forward recursion would evaluate it once
more at `y`: the same cost), and for the inverse-autoregressive direction
(`tfb.Invert(MaskedAutoregressiveFlow(...))`) `J^{-T} w` is a triangular solve
with `D` sequential steps, as expensive as the inverse pass it would replace.

The samples are those of `q.sample` (the base's `sample` with the same seed, then
each layer's forward computed with the same operations), and the gradient equals
the inverse route's up to float rounding (tests/test_flow_path_gradient.py): the
substrate's `path_weighted_vjp` reads the surrogate only through `log_prob(z)` at
these samples, for its value (the stopped log-weights) and its gradient in `z`
(`FlowRoute.surrogate_posterior` supplies both; `q`'s parameters get no direct
gradient there on either route). The coupling's split and conditioner are read from
`RealNVP`'s public `parameters` (its constructor's arguments).

#### References

[1] Vaitl, Winkler, Richter & Kessel. Fast and unified path gradient estimators
    for normalizing flows. ICLR 2024. https://arxiv.org/abs/2403.15881
"""

import contextlib
import threading
from typing import Any, NamedTuple

import numpy as np

__all__ = ["FlowRoute", "flow_route", "inverse_route"]

_STATE = threading.local()


@contextlib.contextmanager
def inverse_route():
    """Within this context `flow_route` returns `None`: flows take the inverse route.

    For benchmarks and tests that compare both routes on the same surrogate; read
    when a loss is traced, so wrap the tracing (the first call of a `tf.function`).
    """
    previous = getattr(_STATE, "disabled", False)
    _STATE.disabled = True
    try:
        yield
    finally:
        _STATE.disabled = previous


class FlowRoute(NamedTuple):
    """Samples of a flow surrogate with the stopped density and score computed alongside.

    * `samples`: `z = T(ε)`, gradients live (they carry the path gradient to `φ`).
    * `surrogate_posterior`: an object whose `log_prob(z)`, called at these
      samples (or a fresh copy of them), has the value `log q(z)` and the gradient
      `∇z log q_φ̄(z)` with respect to `z`, and no gradient to `φ`: what
      `path_weighted_vjp` evaluates at the samples, without the inverse pass.
    """

    samples: Any
    surrogate_posterior: Any


class _ScoreAtSamples:
    """`log_prob(z) = stop(log q) + Σ_event stop(∇z log q) (z - stop(z))`, valid at the samples.

    The value is `log q(z)` exactly (the second term is 0) and its gradient in
    `z` is the precomputed score; it reads `z` only for that gradient, so it is
    correct only at the samples it was computed for (`FlowRoute`).
    """

    def __init__(self, ops, log_prob, score):
        self._ops = ops
        self._log_prob = ops.stop_gradient(log_prob)
        self._score = ops.stop_gradient(score)

    def log_prob(self, value):
        ops = self._ops
        return self._log_prob + ops.reduce_sum(self._score * (value - ops.stop_gradient(value)), -1)


def _classes(module, name):
    """The public class `name` of a TFP module and its private auto-composite base."""
    public = getattr(module, name)
    return tuple(c for c in public.__mro__ if c.__name__ in (name, "_" + name))


def _layers(tfb, bijector):
    """The bijector's layers in application order, or `None` if one has no rule here."""
    if isinstance(bijector, _classes(tfb, "Chain")):
        layers = []
        for inner in reversed(bijector.bijectors):  # a Chain applies its last one first
            inner_layers = _layers(tfb, inner)
            if inner_layers is None:
                return None
            layers.extend(inner_layers)
        return layers
    if isinstance(bijector, _classes(tfb, "Permute")):
        # The constructor's argument: a Python int unless the user passed a tensor.
        axis = bijector.parameters.get("axis", -1)
        return [bijector] if isinstance(axis, int) and axis == -1 else None
    if isinstance(bijector, _classes(tfb, "RealNVP")):
        return [bijector]
    if isinstance(bijector, _classes(tfb, "Shift") + _classes(tfb, "Scale")):
        return [bijector]
    return None


def _elementwise_layers(tfb, bijector):
    """The layers of a coupling's inner bijector if they are all `Shift`/`Scale`, else `None`."""
    layers = _layers(tfb, bijector)
    elementwise = _classes(tfb, "Shift") + _classes(tfb, "Scale")
    if layers is None or not all(isinstance(b, elementwise) for b in layers):
        return None
    return layers


def _elementwise_forward(layers, x):
    """`(y, log|det J|)` of `Shift`/`Scale` layers applied in order to the vector `x`."""
    fldj = 0.0
    for layer in layers:
        fldj = fldj + layer.forward_log_det_jacobian(x, event_ndims=1)
        x = layer.forward(x)
    return x, fldj


def _elementwise_score(ops, layers, score):
    """`J^{-T} score` of `Shift`/`Scale` layers (whose `log|det J|` is constant in `x`)."""
    for layer in layers:
        if not hasattr(layer, "shift"):
            scale = layer.scale if layer.scale is not None else ops.exp(layer.log_scale)
            score = score / scale
    return score


class _Unsupported(Exception):
    """A coupling's inner bijector has no rule here: the inverse route is taken."""


def _coupling(tfb, layer, depth):
    """`(masked size, inner bijector function)` of a `RealNVP`, from its constructor's arguments.

    Read from the bijector's public `parameters`, as `RealNVP` itself uses them: the
    first `masked` coordinates condition the rest (the last `-masked` ones when
    negative), and `shift_and_log_scale_fn` becomes `Chain([Shift, Scale(log_scale)])`.
    `None` if the split is not one `RealNVP` accepts (its own `forward` then raises).
    """
    parameters = layer.parameters
    if parameters.get("num_masked") is not None:
        masked = int(parameters["num_masked"])
    elif parameters.get("fraction_masked") is not None:
        masked = int(np.round(depth * parameters["fraction_masked"]))
    else:
        return None
    if not 0 < abs(masked) < depth:
        return None
    shift_and_log_scale_fn = parameters.get("shift_and_log_scale_fn")
    if shift_and_log_scale_fn is None:
        return masked, parameters["bijector_fn"]

    def bijector_fn(x0, units):
        shift, log_scale = shift_and_log_scale_fn(x0, units)
        parts = [] if shift is None else [tfb.Shift(shift)]
        return tfb.Chain(parts + ([] if log_scale is None else [tfb.Scale(log_scale=log_scale)]))

    return masked, bijector_fn


def _coupling_step(ops, tfb, layer, x, score):
    """`(y, log|det J|, J^{-T} score)` of a `RealNVP` layer.

    `y_A = x_A`, `y_B = h_{x_A}(x_B)` with `h` elementwise (`Shift`/`Scale`), so
    `log|det J| = log|det J_h|` does not depend on `x_B` and, with `w = score`,

    ```none
    u_B = J_h^{-T} w_B,    u_A = w_A - ∇_{x_A} [log|det J_h| + u_B · h_{x_A}(x_B)]
    ```

    (the `x_A` part of the bracket's first term is the recursion's `∇ log|det J|`).
    ONE vector-Jacobian product through the conditioner, at the activations of the
    forward pass that computes `y`, which is assembled as `RealNVP`'s forward does.
    """
    depth = x.shape[-1]
    coupling = None if depth is None else _coupling(tfb, layer, depth)
    if coupling is None:
        raise _Unsupported
    masked, bijector_fn = coupling
    units = depth - abs(masked)
    x0, x1 = x[..., :masked], x[..., masked:]
    s0, s1 = score[..., :masked], score[..., masked:]
    if masked < 0:
        x0, x1, s0, s1 = x1, x0, s1, s0

    def conditioned(x0):
        inner = _elementwise_layers(tfb, bijector_fn(x0, units))
        if inner is None:
            raise _Unsupported
        y1, fldj = _elementwise_forward(inner, x1)
        # `u_B` is a cotangent: its own dependence on `x_A` (through the scale) is
        # not part of `J^{-T} w`, so it is returned stopped.
        return y1, fldj, ops.stop_gradient(_elementwise_score(ops, inner, s1))

    (y1, fldj, u1), pullback = ops.vjp(conditioned, x0)
    (pulled,) = pullback((u1, ops.ones_like(fldj), ops.zeros_like(u1)))
    u0 = s0 - pulled
    if masked < 0:
        y1, x0, u1, u0 = x0, y1, u0, u1
    return ops.concat([x0, y1], -1), fldj, ops.concat([u0, u1], -1)


def flow_route(ops, surrogate_posterior, num_samples, seed):
    """`FlowRoute` of `num_samples` draws with the given seed, or `None` for the inverse route.

    Args:
      ops: the substrate module (`tfp_gradest._substrate`).
      surrogate_posterior: the surrogate; only a `TransformedDistribution` of the
        kind described in this module's docstring takes this route.
      num_samples: Python `int`, the flat number of draws (`S * K`).
      seed: the sampling seed, passed to the base distribution's `sample` as
        `q.sample` passes it.
    """
    if getattr(_STATE, "disabled", False):
        return None
    tfd, tfb = ops.tfp.distributions, ops.tfp.bijectors
    q = surrogate_posterior
    if not isinstance(q, _classes(tfd, "TransformedDistribution")):
        return None
    base = q.distribution
    if (
        getattr(q.event_shape, "rank", None) != 1  # a joint (structured) event: no rank
        or base.event_shape.rank != 1
        or q.batch_shape.rank is None
        or q.batch_shape != base.batch_shape
        or not q.event_shape.is_fully_defined()
    ):
        return None
    layers = _layers(tfb, q.bijector)
    if layers is None:
        return None
    eps = base.sample([num_samples], seed=seed)
    stopped_eps = ops.stop_gradient(eps)
    base_lp, base_pullback = ops.vjp(base.log_prob, stopped_eps)
    (score,) = base_pullback(ops.ones_like(base_lp))
    log_prob = ops.stop_gradient(base_lp)
    x = eps
    try:
        for layer in layers:
            if isinstance(layer, _classes(tfb, "RealNVP")):
                x, fldj, score = _coupling_step(ops, tfb, layer, x, score)
            elif isinstance(layer, _classes(tfb, "Permute")):
                x, fldj, score = layer.forward(x), 0.0, layer.forward(score)
            else:
                score = _elementwise_score(ops, [layer], score)
                x, fldj = _elementwise_forward([layer], x)
            log_prob = log_prob - ops.stop_gradient(fldj)
            score = ops.stop_gradient(score)
    except _Unsupported:
        return None
    return FlowRoute(samples=x, surrogate_posterior=_ScoreAtSamples(ops, log_prob, score))
