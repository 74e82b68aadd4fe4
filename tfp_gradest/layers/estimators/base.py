"""The contract of a layer gradient estimator, the noise source it draws from, and the registry
the layers look identifiers up in.

A Bayesian layer samples its weights `W = μ + σ ⊙ ε` from a mean-field Normal
posterior. A *layer gradient estimator* decides how the pre-activations
`h = map(x, W) + b` are sampled and differentiated: one weight sample shared by
the batch (reparameterisation), the marginal of `h` per example (local
reparameterisation), sign-flipped per-example perturbations (Flipout), or the
reparameterisation forward pass with a Rao-Blackwellised backward pass (R2-G2).
Each is one small immutable object in its own module, holding its own options
(`R2G2(cg_iterations=8)`) and its own rules of where it applies, so adding one
(or the rule that picks one, `auto`) is one file.
"""

import functools
import inspect
import warnings
from typing import Any, NamedTuple

from keras import ops

from tfp_gradest import _backend
from tfp_gradest._util.registry import Configurable, Registry

__all__ = ["LayerEstimator", "NoiseSource", "Posterior", "get", "names", "register", "serialize"]

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


class NoiseSource:
    """Standard Normal draws and random signs, each keyed by a fresh stateless seed.

    A layer hands its estimator one of these (built on the layer's
    `keras.random.SeedGenerator`); a test can hand its own (e.g.
    `NoiseSource(keras.random.SeedGenerator(7))`, or one on the layer's `seed_generator`
    with its state restored, to replay the layer's draws). The draws are each backend's
    stateless generator (`tfp_gradest._backend`), so they trace under XLA.

    Args:
      seed: a `keras.random.SeedGenerator`, or a callable returning the next stateless seed
        (a `[2]` integer Tensor) at each call.
    """

    def __init__(self, seed):
        self._next_seed = seed.next if hasattr(seed, "next") else seed
        if not callable(self._next_seed):
            raise TypeError(
                "`seed` must be a keras.random.SeedGenerator or a callable returning the next "
                f"stateless seed. Received: seed={seed!r}"
            )

    def normal(self, shape, dtype, per_example=False):
        """`N(0, 1)` noise of `shape`. `per_example=True` when `shape[0]` is the batch (each
        example its own draw), so that replicas of a `tf.distribute` strategy draw their own
        rows of the global batch's."""
        draw = _backend.per_example_normal if per_example else _backend.normal
        return draw(shape, self._next_seed(), dtype)

    def random_signs(self, shape, dtype, per_example=False):
        """Fair `±1` of `shape` (Rademacher); `per_example` as for `normal`."""
        draw = _backend.per_example_random_signs if per_example else _backend.random_signs
        return draw(shape, self._next_seed(), dtype)


class LayerEstimator(Configurable):
    """Base class: how a layer's pre-activations are sampled, and hence differentiated.

    Contract:

    * `sample(inputs, linear_map, posterior, noise)` returns the pre-activations
      `h` (before the activation), a sample whose gradient w.r.t. the posterior
      parameters is an unbiased estimate of the gradient of the expected loss.
      `linear_map` is a `tfp_gradest.r2g2.DenseMap` or `ConvolutionMap`,
      `posterior` a `Posterior`. Randomness comes only from `noise`, a `NoiseSource`
      (any object with `normal(shape, dtype, per_example=False)` and
      `random_signs(shape, dtype, per_example=False)`; `per_example=True` when the
      first axis of `shape` is the batch), so everything traces under XLA. Written
      in `keras.ops`, so it runs on every supported Keras backend.
    * Options are constructor arguments, readable as attributes of the same name
      (`R2G2(cg_iterations=8).cg_iterations`); `get_config`/`from_config`, `repr` and
      equality follow from them (`tfp_gradest._util.registry.Configurable`).
    * `check(layer_kind, input_shape=None, layer_name=None)` raises a `ValueError`
      saying what to use instead where the estimator does not apply: by default to the
      layer kinds (`"dense"`, `"conv"`) outside `layer_kinds`, explained by `why_not`.
      A layer calls it at construction (kind only) and at build (with the input shape).
      `applies_to(layer_kind, input_shape=None)` is its boolean form.
    * `resolve(layer, input_shape)`: the estimator actually used by `layer`,
      decided once at build time from static shapes. Every estimator but
      `auto` returns itself.

    A new estimator is one subclass, registered with `@register("name")`; the layers
    accept its name, class, instance or config dict, and the contract tests run over
    every registered name.
    """

    name = None  # set by `register`
    layer_kinds = LAYER_KINDS
    why_not = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        sample = cls.__dict__.get("sample")
        if sample is not None and _takes_the_layer(sample):
            cls.sample = _layer_first_sample(cls, sample)

    def check(self, layer_kind, input_shape=None, layer_name=None):
        """Raises a `ValueError` if this estimator does not apply to the layer."""
        del input_shape
        if layer_kind not in self.layer_kinds:
            hint = f" {self.why_not}" if self.why_not else ""
            raise ValueError(
                f"{layer_name or 'The layer'} supports gradient_estimator in "
                f"{names(layer_kind)}. Received: gradient_estimator={self.name!r}.{hint}"
            )

    def applies_to(self, layer_kind, input_shape=None):
        """Whether `check` passes for this layer kind (and input shape, if given)."""
        try:
            self.check(layer_kind, input_shape)
        except ValueError:
            return False
        return True

    def resolve(self, layer, input_shape):
        del layer, input_shape
        return self

    def sample(self, inputs, linear_map, posterior, noise):
        raise NotImplementedError


def _takes_the_layer(sample):
    parameters = list(inspect.signature(sample).parameters)
    return len(parameters) > 1 and parameters[1] == "layer"


def _layer_first_sample(cls, sample):
    """Adapts a subclass written for 0.2's `sample(layer, inputs, linear_map, posterior)`."""
    warnings.warn(
        f"{cls.__name__}.sample(self, layer, inputs, linear_map, posterior) is the 0.2 "
        "signature, deprecated: write sample(self, inputs, linear_map, posterior, noise) and "
        "draw from `noise.normal(shape, dtype, per_example=False)` / `noise.random_signs(...)` "
        "instead of the layer's private `_noise` / `_random_signs`.",
        DeprecationWarning,
        stacklevel=3,
    )

    @functools.wraps(sample)
    def adapted(self, inputs, linear_map, posterior, noise):
        return sample(self, noise._layer, inputs, linear_map, posterior)

    return adapted


_REGISTRY = Registry("layer gradient estimator", LayerEstimator, "gradient_estimator")


def register(name):
    """Class decorator: `@register("name")` registers a `LayerEstimator` subclass under `name`
    (and sets its `name`)."""
    if isinstance(name, type):  # 0.2's `@register` with a class attribute `name`
        warnings.warn(
            f"`@register` on {name.__name__} is deprecated: write "
            f"`@register({name.name!r})` above the class.",
            DeprecationWarning,
            stacklevel=2,
        )
        return _REGISTRY.register(name.name)(name)
    return _REGISTRY.register(name)


def names(layer_kind=None):
    """Registered names (in registration order), optionally only those whose `layer_kinds`
    include `layer_kind`."""
    if layer_kind is None:
        return _REGISTRY.names()
    return _REGISTRY.names(lambda cls: layer_kind in cls.layer_kinds)


def get(identifier, layer_kind=None, layer_name=None):
    """A `LayerEstimator` from a name, a class, an instance or a config dict.

    As `keras.initializers.get`: a registered name (`"r2g2"`) or class gives an instance
    with the default options, an instance is returned as is, and `serialize`'s
    `{"class_name": ..., "config": ...}` rebuilds an equal object.

    Raises:
      ValueError: for an unknown name, naming the registered ones.
      TypeError: for anything else.
    """
    estimator = _REGISTRY.get(identifier)
    if layer_kind is not None or layer_name is not None:
        warnings.warn(
            "get(identifier, layer_kind) is deprecated: write "
            "get(identifier).check(layer_kind) (it raises where the estimator does not apply).",
            DeprecationWarning,
            stacklevel=2,
        )
        estimator.check(layer_kind, layer_name=layer_name)
    return estimator


def serialize(estimator):
    """`{"class_name": ..., "config": ...}`, which `get` turns back into an equal estimator."""
    return _REGISTRY.serialize(estimator)


def sampled_bias(posterior, noise, dtype):
    """`μ_b + σ_b ⊙ ε_b`, one draw shared by the batch (or 0 without a bias)."""
    if not posterior.use_bias:
        return ops.zeros((), dtype)
    return posterior.bias_loc + posterior.bias_scale * noise.normal(posterior.bias_loc.shape, dtype)
