"""The estimator contract, the value-preserving surrogate, and the registry.

Every estimator returns a loss whose *value* is the negative objective estimate
the user already monitors (negative ELBO, negative IWAE bound, ...) and whose
*gradient* is the estimator's. All of them go through `surrogate_objective`.
"""

import abc
import numbers
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest._util import seeds, structure

__all__ = ["GradientEstimator", "surrogate_objective", "register", "get", "names"]

_REGISTRY = {}


def surrogate_objective(value, surrogate):
    """A tensor equal to `value` whose gradient is the gradient of `surrogate`.

        out = stop(value) + (surrogate - stop(surrogate))

    Proof: forward, `surrogate - stop(surrogate)` is `x - x = 0` exactly in
    floating point for finite `x`, so `out == value` bit for bit. Backward,
    `stop` has zero derivative, so `∂out = ∂surrogate`. A non-finite surrogate
    would make the difference NaN, so estimators mask such terms first.

    Args:
      value: Tensor, the objective estimate to report.
      surrogate: Tensor of the same shape whose gradient is the estimator.

    Returns:
      A Tensor with the value of `value` and the gradient of `surrogate`.
    """
    return tf.stop_gradient(value) + (surrogate - tf.stop_gradient(surrogate))


def _static_int(value, arg_name, minimum):
    static = tf.get_static_value(value) if tf.is_tensor(value) else value
    if isinstance(static, np.ndarray) and static.ndim == 0:
        static = static.item()
    if isinstance(static, bool) or not isinstance(static, numbers.Integral):
        raise TypeError(
            f"`{arg_name}` must be a Python integer (XLA needs static sample shapes). "
            f"Received: {arg_name}={value!r}"
        )
    if static < minimum:
        raise ValueError(f"`{arg_name}` must be at least {minimum}. Received: {arg_name}={static}")
    return int(static)


class GradientEstimator(abc.ABC):
    """Base class: a gradient estimator for a variational objective.

    Subclasses implement `_objective`, returning per-objective `(value,
    surrogate)` tensors of shape `[S] + batch_shape`; `loss` validates the call,
    draws samples, and returns `-mean_S(surrogate_objective(value, surrogate))`.

    Capability flags are class attributes checked once, before any tracing:

    * `requires_reparameterization`: needs a fully reparameterised surrogate.
    * `min_importance_sample_size`, `max_importance_sample_size`: allowed `K`.
    * `supports_discrepancy_fn`: valid for any `tfp.vi` Csiszar `discrepancy_fn`,
      not just the reverse KL `tfp.vi.kl_reverse`.
    """

    name: ClassVar[str] = ""
    requires_reparameterization: ClassVar[bool] = True
    min_importance_sample_size: ClassVar[int] = 1
    max_importance_sample_size: ClassVar[int | None] = None
    min_sample_size: ClassVar[int] = 1
    supports_discrepancy_fn: ClassVar[bool] = False

    def validate(
        self,
        surrogate_posterior,
        sample_size=1,
        importance_sample_size=1,
        discrepancy_fn=None,
        target_log_prob_fn=None,
    ):
        """Raises a `ValueError`/`TypeError` naming the argument for calls this estimator cannot serve.

        Returns:
          `(sample_size, importance_sample_size)` as Python ints.
        """
        if target_log_prob_fn is not None and not callable(target_log_prob_fn):
            raise TypeError(
                "`target_log_prob_fn` must be callable. "
                f"Received: target_log_prob_fn={target_log_prob_fn!r}"
            )
        if not (
            hasattr(surrogate_posterior, "sample") and hasattr(surrogate_posterior, "log_prob")
        ):
            raise TypeError(
                "`surrogate_posterior` must be a `tfd.Distribution` (with `sample` and "
                f"`log_prob`). Received: surrogate_posterior={surrogate_posterior!r}"
            )
        sample_size = _static_int(sample_size, "sample_size", self._min_sample_size())
        importance_sample_size = _static_int(
            importance_sample_size, "importance_sample_size", self.min_importance_sample_size
        )
        maximum = self.max_importance_sample_size
        if maximum is not None and importance_sample_size > maximum:
            raise ValueError(
                f"The {type(self).__name__} estimator estimates the ELBO, which uses "
                f"`importance_sample_size=1`; for the importance-weighted bound use "
                f"gradient_estimator='iwae' (or 'iwae_dreg'). "
                f"Received: importance_sample_size={importance_sample_size}"
            )
        if self.requires_reparameterization:
            bad = structure.non_reparameterized_parts(surrogate_posterior)
            if bad:
                parts = "" if bad == [None] else f" (parts {bad})"
                raise ValueError(
                    f"The {type(self).__name__} estimator differentiates through the "
                    f"samples, so `surrogate_posterior` must be fully reparameterized, but "
                    f"it is not{parts}. Use gradient_estimator='score_function' "
                    "(ScoreFunction(reparameterized_parts='pathwise') keeps pathwise "
                    "gradients for the reparameterized parts)."
                )
        if not (discrepancy_fn is None or discrepancy_fn is tfp.vi.kl_reverse):
            if not self.supports_discrepancy_fn:
                raise ValueError(
                    f"The {type(self).__name__} estimator is derived for the reverse KL "
                    "divergence only (its dropped terms have zero mean only there), so "
                    "`discrepancy_fn` must be `tfp.vi.kl_reverse`. For other Csiszar "
                    "divergences use gradient_estimator='reparameterization' or "
                    f"'score_function'. Received: discrepancy_fn={discrepancy_fn!r}"
                )
        return sample_size, importance_sample_size

    def _min_sample_size(self):
        return self.min_sample_size

    def loss(
        self,
        target_log_prob_fn,
        surrogate_posterior,
        sample_size=1,
        importance_sample_size=1,
        seed=None,
        discrepancy_fn=None,
        name=None,
    ):
        """Monte Carlo loss whose value is the negative objective and whose gradient is this estimator's.

        Args:
          target_log_prob_fn: Python callable: the unnormalised target log density
            `log p(x, z)`. It receives samples with one leading sample axis of
            size `sample_size * importance_sample_size` (structured like the
            surrogate's samples, unpacked as in `tfp.vi`) and returns log
            densities with that axis leading.
          surrogate_posterior: `tfd.Distribution` `q(z)`, possibly a joint
            distribution with structured samples.
          sample_size: Python `int` `S`, independent objectives averaged.
            Default value: `1`.
          importance_sample_size: Python `int` `K`, samples per objective.
            Default value: `1`.
          seed: PRNG seed; see `tfp.random.sanitize_seed`. Default value: `None`.
          discrepancy_fn: Csiszar function of the log-weights, as in `tfp.vi`;
            `None` means `tfp.vi.kl_reverse` (the negative ELBO).
            Default value: `None`.
          name: Python `str` name scope. Default value: the estimator's name.

        Returns:
          loss: Tensor of shape `surrogate_posterior.batch_shape` (a scalar in
            the common case).
        """
        sample_size, importance_sample_size = self.validate(
            surrogate_posterior,
            sample_size,
            importance_sample_size,
            discrepancy_fn,
            target_log_prob_fn,
        )
        with tf.name_scope(name or self.name or type(self).__name__):
            seed = seeds.sanitize_seed(seed)
            value, surrogate = self._objective(
                target_log_prob_fn,
                surrogate_posterior,
                sample_size,
                importance_sample_size,
                seed,
                discrepancy_fn or tfp.vi.kl_reverse,
            )
            return -tf.reduce_mean(surrogate_objective(value, surrogate), axis=0)

    @abc.abstractmethod
    def _objective(
        self,
        target_log_prob_fn,
        surrogate_posterior,
        sample_size,
        importance_sample_size,
        seed,
        discrepancy_fn,
    ):
        """Returns `(value, surrogate)`, each of shape `[S] + batch_shape`, to maximise."""

    def __repr__(self):
        return f"{type(self).__name__}()"


def register(name):
    """Class decorator: registers an estimator class under `name` for `get`."""

    def decorator(cls):
        if name in _REGISTRY:
            raise ValueError(f"An estimator is already registered as {name!r}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def names():
    """The registered estimator names, sorted."""
    return sorted(_REGISTRY)


def get(identifier):
    """Returns an estimator from its registered name, or an instance unchanged.

    Args:
      identifier: a registered name such as `"stl"` or `"iwae_dreg"` (case and
        `-` vs `_` do not matter), or a `GradientEstimator` instance.

    Returns:
      A `GradientEstimator` instance (a default-constructed one for a name).
    """
    if isinstance(identifier, GradientEstimator):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, GradientEstimator):
        return identifier()
    if not isinstance(identifier, str):
        raise TypeError(
            "`gradient_estimator` must be a registered name or a GradientEstimator. "
            f"Received: gradient_estimator={identifier!r}"
        )
    key = identifier.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(
            f"Unknown gradient estimator {identifier!r}. Valid names: {', '.join(names())}."
        )
    return _REGISTRY[key]()
