"""`fit_surrogate_posterior_stateless`: TFP-JAX's stateless fit with a choice of estimator.

JAX only (TFP's JAX substrate and an optax optimizer); importing this module imports
JAX, never TensorFlow. `tge.vi` imports it on first use.
"""

import jax
from tensorflow_probability.substrates import jax as tfp

from tfp_gradest import _substrate
from tfp_gradest._util import arguments
from tfp_gradest.vi.losses import (
    check_discrepancy_fn,
    resolve_estimator,
    static_importance_sample_size,
    substrate_name,
)

__all__ = ["fit_surrogate_posterior_stateless"]

_ENTRY_POINT = "tge.vi.fit_surrogate_posterior_stateless"


def _trace_loss(traceable_quantities):
    return traceable_quantities.loss


def fit_surrogate_posterior_stateless(
    target_log_prob_fn,
    build_surrogate_posterior_fn,
    initial_parameters,
    optimizer,
    num_steps,
    convergence_criterion=None,
    trace_fn=_trace_loss,
    discrepancy_fn=tfp.vi.kl_reverse,
    sample_size=1,
    importance_sample_size=1,
    gradient_estimator=None,
    jit_compile=False,
    seed=None,
    name="fit_surrogate_posterior",
    *,
    noise="iid",
):
    """Fits a surrogate posterior on JAX, as TFP-JAX's `fit_surrogate_posterior_stateless`,
    with any estimator.

    A drop-in for `tfp.substrates.jax.vi.fit_surrogate_posterior_stateless`
    (TFP 0.25): the same arguments in the same order, the same defaults but one,
    and the same return value; the loop is TFP's own `tfp.math.minimize_stateless`,
    so a seed draws the same samples. `gradient_estimator` takes any
    `tge.estimators.get` identifier (and TFP's `GradientEstimators` values), and
    its default `None` is what TFP does: `"reparameterization"` for
    `importance_sample_size == 1`, `"iwae"` above.

    Each step builds the surrogate from the current parameters and calls the
    estimator's `loss`; the STL and DReG families stop the parameters' gradient
    through the surrogate's density themselves, so `build_surrogate_posterior_fn`
    is all they need (TFP's `DOUBLY_REPARAMETERIZED` builds a second, stopped
    surrogate for it).

    The arguments are checked before anything is traced: the surrogate is built
    once from `initial_parameters` and must be a `tfp.substrates.jax`
    distribution (for TensorFlow surrogates, variables and Keras optimizers,
    `tge.vi.fit_surrogate_posterior` is the entry point), and the estimator must
    serve the call (e.g. STL with `tfp.vi.kl_forward` is a `ValueError`).

    Args:
      target_log_prob_fn: Python callable, the unnormalised target log density,
        called with the surrogate's samples as in `tfp.vi` (`fn(*z)` for a list
        or tuple, `fn(**z)` for a dict), returning shape `[sample_size *
        importance_sample_size]`.
      build_surrogate_posterior_fn: Python callable taking the parameters
        (positionally, as `initial_parameters` lists them) and returning a
        `tfp.substrates.jax` distribution.
      initial_parameters: list or tuple of initial parameter values (arrays or
        pytrees of arrays), passed positionally to `build_surrogate_posterior_fn`.
      optimizer: a pure functional optimizer: an `optax.GradientTransformation`
        (or anything with `init(parameters)` and `update(grads, state, parameters)`).
      num_steps: Python `int`, the (maximum) number of steps.
      convergence_criterion: optional
        `tfp.substrates.jax.optimizer.convergence_criteria.ConvergenceCriterion`.
        Default value: `None`.
      trace_fn: callable of the `tfp.math.MinimizeTraceableQuantities`
        (`loss`, `gradients`, `parameters`, ...); its values are stacked over steps.
        Default value: the loss.
      discrepancy_fn: Csiszar function of the JAX substrate.
        Default value: `tfp.substrates.jax.vi.kl_reverse`.
      sample_size: Python `int`, independent objectives averaged per step.
        Default value: `1`.
      importance_sample_size: Python `int`, samples per objective.
        Default value: `1`.
      gradient_estimator: registered name (see `tge.estimators.names()`), a
        `tge.estimators.GradientEstimator`, or a `tfp.vi.GradientEstimators`
        value. Default value: `None` (`"reparameterization"`, or `"iwae"` for
        `importance_sample_size > 1`: what TFP does).
      jit_compile: Python `bool`: run the whole loop as one `jax.jit` program.
        Default value: `False`.
      seed: a JAX PRNG key (`jax.random.PRNGKey(0)`), a pair of ints, or an int
        (the same key every time). Required: JAX has no global random state, so
        `None` is a `TypeError` (TFP-JAX fails deep inside with it).
        Default value: `None`.
      name: Python `str`. Default value: `"fit_surrogate_posterior"`.
      noise: `"iid"` or `"rqmc"` (randomised quasi-Monte Carlo base normals, see
        `tge.estimators.GradientEstimator.loss`). Default value: `"iid"`.

    Returns:
      optimized_parameters: the final parameters, structured as `initial_parameters`.
      traced_values: what `trace_fn` returns, with a leading axis of size `num_steps`.

    #### Examples

    ```python
    import jax, optax
    from tensorflow_probability.substrates import jax as tfp

    def build(loc, raw_scale):
        return tfp.distributions.Normal(loc, jax.nn.softplus(raw_scale))

    (loc, raw_scale), losses = tge.vi.fit_surrogate_posterior_stateless(
        lambda z: tfp.distributions.Normal(2.0, 0.5).log_prob(z), build, (0.0, 0.0),
        optax.adam(0.05), num_steps=500, gradient_estimator="stl", jit_compile=True,
        seed=jax.random.PRNGKey(0))
    ```
    """
    estimator, discrepancy_fn, sample_size, importance_sample_size, seed = _check_arguments(
        target_log_prob_fn,
        build_surrogate_posterior_fn,
        initial_parameters,
        optimizer,
        num_steps,
        trace_fn,
        discrepancy_fn,
        sample_size,
        importance_sample_size,
        gradient_estimator,
        jit_compile,
        seed,
        noise,
    )

    def variational_loss_fn(*parameters, seed=None):
        return estimator.loss(
            target_log_prob_fn,
            build_surrogate_posterior_fn(*parameters),
            sample_size=sample_size,
            importance_sample_size=importance_sample_size,
            seed=seed,
            discrepancy_fn=discrepancy_fn,
            noise=noise,
        )

    return tfp.math.minimize_stateless(
        variational_loss_fn,
        init=initial_parameters,
        num_steps=num_steps,
        optimizer=optimizer,
        convergence_criterion=convergence_criterion,
        trace_fn=trace_fn,
        jit_compile=jit_compile,
        seed=seed,
        name=name,
    )


def _check_arguments(
    target_log_prob_fn,
    build_surrogate_posterior_fn,
    initial_parameters,
    optimizer,
    num_steps,
    trace_fn,
    discrepancy_fn,
    sample_size,
    importance_sample_size,
    gradient_estimator,
    jit_compile,
    seed,
    noise="iid",
):
    """Everything `fit_surrogate_posterior_stateless` can check before tracing.

    Returns `(estimator, discrepancy_fn, sample_size, importance_sample_size, seed)`, as
    the estimator and the loop take them.
    """
    if not callable(build_surrogate_posterior_fn):
        raise TypeError(
            "`build_surrogate_posterior_fn` must be a Python callable taking the parameters "
            "and returning a `tfp.substrates.jax` distribution. "
            f"Received: build_surrogate_posterior_fn={build_surrogate_posterior_fn!r}"
        )
    if not isinstance(initial_parameters, (list, tuple)):
        raise TypeError(
            "`initial_parameters` must be a list or tuple of parameter values (arrays or "
            "pytrees of arrays), passed positionally to `build_surrogate_posterior_fn`; for "
            "one pytree `params`, pass `(params,)`. "
            f"Received: initial_parameters={initial_parameters!r} "
            f"({type(initial_parameters).__name__})"
        )
    tensorflow_leaves = [
        leaf
        for leaf in jax.tree_util.tree_leaves(initial_parameters)
        if type(leaf).__module__.split(".")[0] in ("tensorflow", "tf_keras")
    ]
    if tensorflow_leaves:
        raise TypeError(
            f"{_ENTRY_POINT} fits JAX parameters, but `initial_parameters` holds TensorFlow "
            f"values ({type(tensorflow_leaves[0]).__name__}). Pass NumPy or JAX arrays, or, "
            "for TensorFlow variables and a Keras optimizer, use "
            "tge.vi.fit_surrogate_posterior. "
            f"Received: initial_parameters={initial_parameters!r}"
        )
    functional = callable(getattr(optimizer, "init", None)) and callable(
        getattr(optimizer, "update", None)
    )
    if not functional:
        keras_like = callable(getattr(optimizer, "apply_gradients", None))
        raise TypeError(
            "`optimizer` must be a pure functional optimizer with `init` and `update`, e.g. "
            "optax.adam(0.05)"
            + (
                " (a Keras or TensorFlow optimizer updates variables in place: it is for "
                "tge.vi.fit_surrogate_posterior)"
                if keras_like
                else ""
            )
            + f". Received: optimizer={optimizer!r}"
        )
    arguments.check_positive_integer("num_steps", num_steps)
    if not callable(trace_fn):
        raise TypeError(
            "`trace_fn` must be a Python callable of the traceable quantities (e.g. "
            f"`lambda t: t.loss`). Received: trace_fn={trace_fn!r}"
        )
    if not isinstance(jit_compile, bool):
        raise TypeError(
            f"`jit_compile` must be True or False. Received: jit_compile={jit_compile!r}"
        )
    surrogate = build_surrogate_posterior_fn(*initial_parameters)
    if not (hasattr(surrogate, "sample") and hasattr(surrogate, "log_prob")):
        raise TypeError(
            "`build_surrogate_posterior_fn` must return a `tfp.substrates.jax` distribution. "
            f"Received: build_surrogate_posterior_fn(*initial_parameters)={surrogate!r}"
        )
    substrate = substrate_name(surrogate)
    if substrate != "jax":
        raise TypeError(
            f"{_ENTRY_POINT} runs on JAX, but `build_surrogate_posterior_fn` returned a "
            f"distribution of TFP's {substrate!r} substrate ({type(surrogate).__name__}). "
            "Build it with `from tensorflow_probability.substrates import jax as tfp`, or, "
            "for a TensorFlow surrogate, use tge.vi.fit_surrogate_posterior. "
            f"Received: build_surrogate_posterior_fn(*initial_parameters)={surrogate!r}"
        )
    discrepancy_fn = check_discrepancy_fn(_ENTRY_POINT, discrepancy_fn, substrate)
    importance_sample_size = static_importance_sample_size(importance_sample_size)
    estimator = resolve_estimator(gradient_estimator, importance_sample_size)
    sample_size, importance_sample_size = estimator.validate(
        surrogate, sample_size, importance_sample_size, discrepancy_fn, target_log_prob_fn, noise
    )
    return (
        estimator,
        discrepancy_fn,
        sample_size,
        importance_sample_size,
        _substrate.get("jax").sanitize_seed(seed),
    )
