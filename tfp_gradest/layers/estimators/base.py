"""The contract of a layer gradient estimator, and the registry the layers look names up in.

A Bayesian layer samples its weights `W = μ + σ ⊙ ε` from a mean-field Normal
posterior. A *layer gradient estimator* decides how the pre-activations
`h = map(x, W) + b` are sampled and differentiated: one weight sample shared by
the batch (reparameterisation), the marginal of `h` per example (local
reparameterisation), sign-flipped per-example perturbations (Flipout), or the
reparameterisation forward pass with a Rao-Blackwellised backward pass (R2-G2).
Each is one small immutable object in its own module, so adding one (or the
rule that picks one, `auto`) is one file.
"""

from typing import Any, NamedTuple

from keras import ops

__all__ = ["LayerEstimator", "Posterior", "get", "names", "register"]

LAYER_KINDS = ("dense", "conv")


class Posterior(NamedTuple):
    """A layer's posterior parameters as backend tensors; the bias fields are `None` without a
    bias."""

    kernel_loc: Any
    kernel_scale: Any
    bias_loc: Any = None
    bias_scale: Any = None

    @property
    def use_bias(self):
        return self.bias_loc is not None


class LayerEstimator:
    """Base class: how a layer's pre-activations are sampled, and hence differentiated.

    Contract:

    * `sample(layer, inputs, linear_map, posterior)` returns the pre-activations
      `h` (before the activation), a sample whose gradient w.r.t. the posterior
      parameters is an unbiased estimate of the gradient of the expected loss.
      Randomness comes only from the layer's noise source (`layer._noise`,
      `layer._random_signs`: stateless draws, `tfp_gradest._backend`, seeded by the
      layer's `keras.random.SeedGenerator`), so everything traces under XLA. Written
      in `keras.ops`, so it runs on every supported Keras backend.
    * `layer_kinds`: the layers (`"dense"`, `"conv"`) for which the estimator
      is exact; `why_not` explains the refusal for the others.
    * `resolve(layer, input_shape)`: the estimator actually used by `layer`,
      decided once at build time from static shapes. Every estimator but
      `auto` returns itself.
    """

    name = None
    layer_kinds = LAYER_KINDS
    why_not = ""

    def resolve(self, layer, input_shape):
        del layer, input_shape
        return self

    def sample(self, layer, inputs, linear_map, posterior):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


_REGISTRY = {}


def register(cls):
    """Class decorator: registers one instance of `cls` under `cls.name`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"A layer gradient estimator named {cls.name!r} is already registered.")
    _REGISTRY[cls.name] = cls()
    return cls


def names(layer_kind=None):
    """Registered names (in registration order), optionally only those that apply to
    `layer_kind`."""
    return tuple(
        name
        for name, estimator in _REGISTRY.items()
        if layer_kind is None or layer_kind in estimator.layer_kinds
    )


def get(name, layer_kind=None, layer_name="The layer"):
    """The registered estimator `name`; a `ValueError` naming the choices if it does not apply."""
    estimator = _REGISTRY.get(name) if isinstance(name, str) else None
    if estimator is None or (layer_kind is not None and layer_kind not in estimator.layer_kinds):
        hint = f" {estimator.why_not}" if estimator is not None and estimator.why_not else ""
        raise ValueError(
            f"{layer_name} supports gradient_estimator in {names(layer_kind)}. "
            f"Received: gradient_estimator={name!r}.{hint}"
        )
    return estimator


def sampled_bias(layer, posterior, dtype):
    """`μ_b + σ_b ⊙ ε_b`, one draw shared by the batch (or 0 without a bias)."""
    if not posterior.use_bias:
        return ops.zeros((), dtype)
    return posterior.bias_loc + posterior.bias_scale * layer._noise(posterior.bias_loc.shape, dtype)
