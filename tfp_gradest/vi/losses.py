"""`monte_carlo_variational_loss` with a choice of gradient estimator."""

import enum
import numbers
import sys

import numpy as np

from tfp_gradest import _backend, _substrate, estimators

__all__ = [
    "check_discrepancy_fn",
    "check_keras_backend",
    "monte_carlo_variational_loss",
    "resolve_estimator",
    "substrate_name",
]

# `tfp.vi.GradientEstimators` member name -> our estimator; `None`: the `tfp.vi` default for
# K. By name, so the enum of either substrate (TensorFlow's, `tfp.substrates.jax`'s) maps.
TFP_GRADIENT_ESTIMATORS = {
    "SCORE_FUNCTION": "score_function",
    "REPARAMETERIZATION": None,
    "DOUBLY_REPARAMETERIZED": "iwae_dreg",
    "VIMCO": "vimco",
}

# What a JAX user writes instead of the TensorFlow entry points (their errors say so).
STATELESS_FIT_HINT = (
    "On JAX, use tge.vi.fit_surrogate_posterior_stateless (a TFP-JAX surrogate built from a "
    "parameter pytree, an optax optimizer) or tge.vi.monte_carlo_variational_loss with a "
    "`tfp.substrates.jax` surrogate inside your own jax.grad (docs/guides/jax.md)."
)


def static_importance_sample_size(importance_sample_size):
    """`importance_sample_size` as a Python int where it is static (a NumPy int, a constant
    TensorFlow Tensor, a concrete JAX array).

    Anything else that is not a tensor is returned unchanged, for the
    estimator's own check to name. A tensor with no static value (a TensorFlow
    placeholder, a JAX tracer) is refused: the default estimator depends on `K`
    (IWAE for `K > 1`), and XLA needs static sample shapes.
    """
    value = importance_sample_size
    tf = sys.modules.get("tensorflow")  # consulted only for its own tensors: no import
    jax = sys.modules.get("jax")
    if tf is not None and tf.is_tensor(value):
        value = tf.get_static_value(value)
    elif jax is not None and isinstance(value, jax.core.Tracer):
        value = None
    elif jax is not None and isinstance(value, jax.Array):
        value = np.asarray(value)
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


def substrate_name(distribution):
    """`"tensorflow"` or `"jax"`: the TFP substrate `distribution` is built on (from its
    type; nothing is imported)."""
    return _substrate.name_of(distribution)


def _function_substrate(fn):
    """The TFP substrate a TFP function belongs to (`"tensorflow"`, `"jax"`, `"numpy"`), or
    `None` for anything else (the user's own function, which is not judged)."""
    module = getattr(fn, "__module__", None) or ""
    if module.startswith("tensorflow_probability.substrates."):
        return module.split(".")[2]
    if module.startswith("tensorflow_probability.python."):
        return "tensorflow"
    return None


def check_discrepancy_fn(entry_point_name, discrepancy_fn, substrate):
    """Raises a `TypeError` naming `discrepancy_fn` when it is a TFP function of another
    substrate than the surrogate's (`tfp.vi.kl_reverse` of TensorFlow on a JAX surrogate):
    it would run TensorFlow on JAX arrays (or the reverse) and fail deep inside.

    Returns `discrepancy_fn`, or `None` for that substrate's own `kl_reverse` (which the
    estimators read as the reverse KL whatever its substrate).
    """
    if discrepancy_fn is None:
        return None
    owner = _function_substrate(discrepancy_fn)
    if owner is not None and owner != substrate:
        spelled = (
            "tfp.vi" if substrate == "tensorflow" else "tfp.substrates.jax.vi"
        ) + f".{getattr(discrepancy_fn, '__name__', 'kl_reverse')}"
        raise TypeError(
            f"{entry_point_name}: `discrepancy_fn` is a TensorFlow Probability function of "
            f"the {owner!r} substrate, but the surrogate posterior is built on the "
            f"{substrate!r} substrate. Pass the same substrate's function (e.g. {spelled}) "
            f"or None (the reverse KL). Received: discrepancy_fn={discrepancy_fn!r}"
        )
    if discrepancy_fn is _substrate.get(substrate).tfp.vi.kl_reverse:
        return None
    return discrepancy_fn


def check_keras_backend(entry_point_name, *objects):
    """Refuses Keras objects of a backend other than TensorFlow, before anything is traced.

    For the TensorFlow entry points (`tge.vi.fit_surrogate_posterior`, and
    `monte_carlo_variational_loss` with a TensorFlow surrogate, `tge.reuse.fit`):
    they run whatever the Keras backend is, as long as what they are given is
    TensorFlow's. Under `KERAS_BACKEND=jax` a Keras optimizer or a
    `keras.Variable` (in the surrogate's parameters, or in `trainable_variables`)
    is JAX's, and would fail deep inside `tfp.math.minimize` (or silently get no
    gradient); so if any of `objects` (searched through lists, dicts and
    distributions' parameters) is one, this raises a `RuntimeError` naming the
    backend, what to set, and the JAX entry points to use instead.
    """
    keras = sys.modules.get("keras")  # not imported: no Keras object can have been made
    if keras is None or keras.backend.backend() == "tensorflow":
        return
    for obj in _flatten(objects):
        if isinstance(obj, (keras.Variable, keras.optimizers.Optimizer)):
            try:
                _backend.require_tensorflow_backend(
                    f"{entry_point_name} with a Keras {type(obj).__name__}"
                )
            except RuntimeError as error:
                raise RuntimeError(f"{error} {STATELESS_FIT_HINT}") from None


def _flatten(objects, depth=0):
    """Everything in `objects`, looking into sequences, dicts and distributions' parameters."""
    for obj in objects:
        yield obj
        if depth > 8:  # parameters of parameters: deep enough for any real surrogate
            continue
        parameters = getattr(obj, "parameters", None)
        if isinstance(parameters, dict) and hasattr(obj, "log_prob"):  # a distribution
            yield from _flatten(parameters.values(), depth + 1)
        elif isinstance(obj, dict):
            yield from _flatten(obj.values(), depth + 1)
        elif isinstance(obj, (list, tuple)):
            yield from _flatten(obj, depth + 1)


def resolve_estimator(gradient_estimator, importance_sample_size=1):
    """The estimator for `gradient_estimator`, defaulting as `tfp.vi` does.

    `None` means pathwise gradients of the objective `tfp.vi` would minimise:
    `"reparameterization"` (the ELBO) for `importance_sample_size == 1`, and
    `"iwae"` (the importance-weighted bound, reparameterised) above that.

    A `tfp.vi.GradientEstimators` value (of TensorFlow's TFP or of
    `tfp.substrates.jax`) maps to the estimator computing the same
    gradient (`TFP_GRADIENT_ESTIMATORS`): `SCORE_FUNCTION` -> `"score_function"`,
    `REPARAMETERIZATION` -> the default above, `DOUBLY_REPARAMETERIZED` ->
    `"iwae_dreg"` (STL at `K = 1`), `VIMCO` -> `"vimco"`. The one difference is
    `DOUBLY_REPARAMETERIZED` with a target that has trainable variables (a
    decoder): `tfp.vi` 0.25 weights their gradient by `w̃_k²`, which is biased;
    `"iwae_dreg"` gives them the IWAE gradient `Σ_k w̃_k ∇θ log p(x, z_k)`
    (Tucker et al. 2019). For the surrogate's parameters the two agree.
    """
    if _is_tfp_gradient_estimators(gradient_estimator):
        gradient_estimator = TFP_GRADIENT_ESTIMATORS[gradient_estimator.name]
    if gradient_estimator is None:
        k = static_importance_sample_size(importance_sample_size)
        multi_sample = isinstance(k, int) and k > 1
        gradient_estimator = "iwae" if multi_sample else "reparameterization"
    return estimators.get(gradient_estimator)


def _is_tfp_gradient_estimators(value):
    """Whether `value` is a member of `tfp.vi.GradientEstimators`, of any TFP substrate."""
    return (
        isinstance(value, enum.Enum)
        and type(value).__name__ == "GradientEstimators"
        and type(value).__module__.startswith("tensorflow_probability.")
        and value.name in TFP_GRADIENT_ESTIMATORS
    )


def monte_carlo_variational_loss(
    target_log_prob_fn,
    surrogate_posterior,
    sample_size=1,
    importance_sample_size=1,
    discrepancy_fn=None,
    seed=None,
    name=None,
    *,
    gradient_estimator=None,
    stopped_surrogate_posterior=None,
    noise="iid",
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

    TensorFlow or JAX, from the surrogate's type: a TensorFlow Probability
    surrogate gives a TensorFlow loss (differentiate it with a
    `tf.GradientTape`); a `tfp.substrates.jax` surrogate, built from parameters
    inside the function you differentiate, gives a JAX scalar, and `jax.grad`
    of it is the estimator's gradient (then `seed` is a JAX PRNG key or an int).
    A `discrepancy_fn` of the other substrate is refused with a `TypeError`.

    Args:
      target_log_prob_fn: Python callable, the unnormalised target log density.
        Samples arrive with one leading axis of size
        `sample_size * importance_sample_size`, unpacked as in `tfp.vi`.
      surrogate_posterior: `tfd.Distribution`, the surrogate `q`, of TensorFlow's
        TFP or of `tfp.substrates.jax`.
      sample_size: Python `int`, independent objectives averaged.
        Default value: `1`.
      importance_sample_size: Python `int`, samples per objective.
        Default value: `1`.
      discrepancy_fn: Csiszar function, as in `tfp.vi`, of the surrogate's
        substrate. Only estimators valid for it accept one other than
        `tfp.vi.kl_reverse`.
        Default value: `None` (`tfp.vi.kl_reverse`, the negative ELBO).
      seed: PRNG seed; see `tfp.random.sanitize_seed`. Default value: `None`.
      name: Python `str` name scope. Default value: the estimator's name.
      gradient_estimator: registered name (see `tge.estimators.names()`), a
        `tge.estimators.GradientEstimator`, or a `tfp.vi.GradientEstimators`
        value of either substrate (mapped as `resolve_estimator` says).
        Default value: `None`, see `resolve_estimator`.
      stopped_surrogate_posterior: accepted for `tfp.vi` compatibility and not
        used: `tfp.vi`'s `DOUBLY_REPARAMETERIZED` needs a copy of the surrogate
        with stopped parameters, while `"iwae_dreg"` stops the gradient itself
        (at the samples, so the target's own variables are unaffected).
        Default value: `None`.
      noise: `"iid"` (TFP's own sampling) or `"rqmc"` (randomised quasi-Monte
        Carlo base normals, for the pathwise estimators; see
        `tge.estimators.GradientEstimator.loss`). Default value: `"iid"`.

    Returns:
      loss: Tensor (or JAX array) of shape `surrogate_posterior.batch_shape`.

    #### Examples

    ```python
    loss = tge.vi.monte_carlo_variational_loss(
        target_log_prob_fn, q, sample_size=8, gradient_estimator="stl", seed=1)
    ```

    On JAX:

    ```python
    from tensorflow_probability.substrates import jax as tfp

    def loss_fn(params, key):
        q = tfp.distributions.Normal(params["loc"], jax.nn.softplus(params["raw_scale"]))
        return tge.vi.monte_carlo_variational_loss(
            target_log_prob_fn, q, sample_size=8, gradient_estimator="stl", seed=key)

    grads = jax.grad(loss_fn)(params, jax.random.PRNGKey(0))
    ```
    """
    entry_point = "tge.vi.monte_carlo_variational_loss"
    if stopped_surrogate_posterior is not None and not hasattr(
        stopped_surrogate_posterior, "log_prob"
    ):
        raise TypeError(
            "`stopped_surrogate_posterior` must be a `tfd.Distribution` or None (it is not "
            "needed here: every estimator stops its own gradients). "
            f"Received: stopped_surrogate_posterior={stopped_surrogate_posterior!r}"
        )
    substrate = substrate_name(surrogate_posterior)
    if substrate == "tensorflow":
        check_keras_backend(entry_point, surrogate_posterior)
    discrepancy_fn = check_discrepancy_fn(entry_point, discrepancy_fn, substrate)
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
        noise=noise,
    )
