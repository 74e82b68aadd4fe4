"""`monte_carlo_variational_loss` with a choice of gradient estimator."""

import numbers

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest import _backend, estimators

__all__ = ["check_keras_backend", "monte_carlo_variational_loss", "resolve_estimator"]

_GradientEstimators = tfp.vi.GradientEstimators

# `tfp.vi.GradientEstimators` -> our estimator; `None`: the `tfp.vi` default for K.
TFP_GRADIENT_ESTIMATORS = {
    _GradientEstimators.SCORE_FUNCTION: "score_function",
    _GradientEstimators.REPARAMETERIZATION: None,
    _GradientEstimators.DOUBLY_REPARAMETERIZED: "iwae_dreg",
    _GradientEstimators.VIMCO: "vimco",
}


def static_importance_sample_size(importance_sample_size):
    """`importance_sample_size` as a Python int where it is static (a NumPy int, a constant Tensor).

    Anything else that is not a tensor is returned unchanged, for the
    estimator's own check to name. A tensor with no static value is refused:
    the default estimator depends on `K` (IWAE for `K > 1`), and XLA needs
    static sample shapes.
    """
    value = importance_sample_size
    if tf.is_tensor(value):
        value = tf.get_static_value(value)
        if value is None:
            raise TypeError(
                "`importance_sample_size` must have a static value (a Python or NumPy int, or "
                "a constant Tensor): the estimator depends on it (IWAE for K > 1, as in "
                "tfp.vi) and XLA needs static sample shapes. Received: "
                f"importance_sample_size={importance_sample_size!r}"
            )
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return importance_sample_size


def check_keras_backend(entry_point_name, *objects):
    """Refuses Keras objects of a backend other than TensorFlow, before anything is traced.

    `tge.vi` is written with TensorFlow and TFP: it runs whatever the Keras
    backend is, as long as what it is given is TensorFlow's. Under
    `KERAS_BACKEND=jax` a Keras optimizer or a `keras.Variable` (in the
    surrogate's parameters, or in `trainable_variables`) is JAX's, and would
    fail deep inside `tfp.math.minimize` (or silently get no gradient); so if
    any of `objects` (searched through lists, dicts and distributions'
    parameters) is one, this raises `_backend.require_tensorflow_backend`'s
    error, naming the backend and what to do.
    """
    if keras.backend.backend() == "tensorflow":
        return
    for obj in _flatten(objects):
        if isinstance(obj, (keras.Variable, keras.optimizers.Optimizer)):
            _backend.require_tensorflow_backend(
                f"{entry_point_name} with a Keras {type(obj).__name__}"
            )


def _flatten(objects, depth=0):
    """Everything in `objects`, looking into sequences, dicts and distributions' parameters."""
    for obj in objects:
        yield obj
        if depth > 8:  # parameters of parameters: deep enough for any real surrogate
            continue
        if isinstance(obj, tfp.distributions.Distribution):
            yield from _flatten(obj.parameters.values(), depth + 1)
        elif isinstance(obj, dict):
            yield from _flatten(obj.values(), depth + 1)
        elif isinstance(obj, (list, tuple)):
            yield from _flatten(obj, depth + 1)


def resolve_estimator(gradient_estimator, importance_sample_size=1):
    """The estimator for `gradient_estimator`, defaulting as `tfp.vi` does.

    `None` means pathwise gradients of the objective `tfp.vi` would minimise:
    `"reparameterization"` (the ELBO) for `importance_sample_size == 1`, and
    `"iwae"` (the importance-weighted bound, reparameterised) above that.

    A `tfp.vi.GradientEstimators` value maps to the estimator computing the same
    gradient (`TFP_GRADIENT_ESTIMATORS`): `SCORE_FUNCTION` -> `"score_function"`,
    `REPARAMETERIZATION` -> the default above, `DOUBLY_REPARAMETERIZED` ->
    `"iwae_dreg"` (STL at `K = 1`), `VIMCO` -> `"vimco"`. The one difference is
    `DOUBLY_REPARAMETERIZED` with a target that has trainable variables (a
    decoder): `tfp.vi` 0.25 weights their gradient by `w̃_k²`, which is biased;
    `"iwae_dreg"` gives them the IWAE gradient `Σ_k w̃_k ∇θ log p(x, z_k)`
    (Tucker et al. 2019). For the surrogate's parameters the two agree.
    """
    if isinstance(gradient_estimator, _GradientEstimators):
        gradient_estimator = TFP_GRADIENT_ESTIMATORS[gradient_estimator]
    if gradient_estimator is None:
        k = static_importance_sample_size(importance_sample_size)
        multi_sample = isinstance(k, int) and k > 1
        gradient_estimator = "iwae" if multi_sample else "reparameterization"
    return estimators.get(gradient_estimator)


def monte_carlo_variational_loss(
    target_log_prob_fn,
    surrogate_posterior,
    sample_size=1,
    importance_sample_size=1,
    discrepancy_fn=tfp.vi.kl_reverse,
    seed=None,
    name=None,
    *,
    gradient_estimator=None,
    stopped_surrogate_posterior=None,
):
    """Monte Carlo variational loss: `tfp.vi`'s contract plus a gradient estimator.

    The value is what `tfp.vi.monte_carlo_variational_loss` reports (the negative
    ELBO, or the negative importance-weighted bound for
    `importance_sample_size > 1`; with a Csiszar `discrepancy_fn` `f`,
    `E[f(log w)]` or `E[f(log (1/K) Σ_k w_k)]`); the gradient is the chosen
    estimator's. A `tfp.vi` call works by changing only the module name, with
    `gradient_estimator=tfp.vi.GradientEstimators.X` and
    `stopped_surrogate_posterior` passed by keyword, as is usual (`tfp.vi`'s
    sixth positional argument is the deprecated `use_reparameterization`).

    Args:
      target_log_prob_fn: Python callable, the unnormalised target log density.
        Samples arrive with one leading axis of size
        `sample_size * importance_sample_size`, unpacked as in `tfp.vi`.
      surrogate_posterior: `tfd.Distribution`, the surrogate `q`.
      sample_size: Python `int`, independent objectives averaged.
        Default value: `1`.
      importance_sample_size: Python `int`, samples per objective.
        Default value: `1`.
      discrepancy_fn: Csiszar function, as in `tfp.vi`. Only estimators valid
        for it accept one other than `tfp.vi.kl_reverse`.
        Default value: `tfp.vi.kl_reverse`.
      seed: PRNG seed; see `tfp.random.sanitize_seed`. Default value: `None`.
      name: Python `str` name scope. Default value: the estimator's name.
      gradient_estimator: registered name (see `tge.estimators.names()`), a
        `tge.estimators.GradientEstimator`, or a `tfp.vi.GradientEstimators`
        value (mapped as `resolve_estimator` says). Default value: `None`, see
        `resolve_estimator`.
      stopped_surrogate_posterior: accepted for `tfp.vi` compatibility and not
        used: `tfp.vi`'s `DOUBLY_REPARAMETERIZED` needs a copy of the surrogate
        with stopped parameters, while `"iwae_dreg"` stops the gradient itself
        (at the samples, so the target's own variables are unaffected).
        Default value: `None`.

    Returns:
      loss: Tensor of shape `surrogate_posterior.batch_shape`.

    #### Examples

    ```python
    loss = tge.vi.monte_carlo_variational_loss(
        target_log_prob_fn, q, sample_size=8, gradient_estimator="stl", seed=1)
    ```
    """
    if stopped_surrogate_posterior is not None and not hasattr(
        stopped_surrogate_posterior, "log_prob"
    ):
        raise TypeError(
            "`stopped_surrogate_posterior` must be a `tfd.Distribution` or None (it is not "
            "needed here: every estimator stops its own gradients). "
            f"Received: stopped_surrogate_posterior={stopped_surrogate_posterior!r}"
        )
    check_keras_backend("tge.vi.monte_carlo_variational_loss", surrogate_posterior)
    importance_sample_size = static_importance_sample_size(importance_sample_size)
    estimator = resolve_estimator(gradient_estimator, importance_sample_size)
    return estimator.loss(
        target_log_prob_fn,
        surrogate_posterior,
        sample_size=sample_size,
        importance_sample_size=importance_sample_size,
        seed=seed,
        discrepancy_fn=discrepancy_fn,
        name=name,
    )
