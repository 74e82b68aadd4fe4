"""`fit_surrogate_posterior`: `tfp.vi`'s optimiser loop with a choice of gradient estimator."""

import functools
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest._util.seeds import sanitize_seed
from tfp_gradest.estimators import Reparameterization
from tfp_gradest.vi.losses import (
    check_keras_backend,
    resolve_estimator,
    static_importance_sample_size,
)

__all__ = ["fit_surrogate_posterior"]


def _trace_loss(traceable_quantities):
    return traceable_quantities.loss


def fit_surrogate_posterior(
    target_log_prob_fn,
    surrogate_posterior,
    optimizer,
    num_steps,
    convergence_criterion=None,
    trace_fn=_trace_loss,
    discrepancy_fn=tfp.vi.kl_reverse,
    sample_size=1,
    importance_sample_size=1,
    trainable_variables=None,
    jit_compile=None,
    seed=None,
    name="fit_surrogate_posterior",
    *,
    gradient_estimator=None,
    gradient_reuse=None,
    num_batches=None,
):
    """Fits a surrogate posterior, as `tfp.vi.fit_surrogate_posterior`, with any estimator.

    A drop-in: the positional arguments, defaults and return value are those of
    `tfp.vi.fit_surrogate_posterior` (TFP 0.25), and the loop is TFP's own
    `tfp.math.minimize`. The addition is the keyword `gradient_estimator`,
    which `tfp.vi` does not offer; Keras 3 optimizers work.

    Arguments are validated before anything is traced, so a call the estimator
    cannot serve (e.g. STL with `tfp.vi.kl_forward`, which TFP 0.25 accepts and
    answers with sign-flipped gradients) raises a `ValueError` at once.

    Args:
      target_log_prob_fn: Python callable, the unnormalised target log density.
      surrogate_posterior: `tfd.Distribution` with trainable variables.
      optimizer: a Keras 3 (or tf_keras) optimizer.
      num_steps: Python `int`, maximum number of steps.
      convergence_criterion: optional `tfp.optimizer.convergence_criteria`
        instance. Default value: `None`.
      trace_fn: callable of the `tfp.math.MinimizeTraceableQuantities`.
        Default value: the loss.
      discrepancy_fn: Csiszar function. Default value: `tfp.vi.kl_reverse`.
      sample_size: Python `int`. Default value: `1`.
      importance_sample_size: Python or NumPy `int` (or a constant Tensor).
        Default value: `1`.
      trainable_variables: optional list of variables to optimise.
        Default value: `None` (all variables the loss reads).
      jit_compile: compile the step with XLA. Default value: `None`.
      seed: PRNG seed; see `tfp.random.sanitize_seed`. Default value: `None`.
      name: Python `str`. Default value: `"fit_surrogate_posterior"`.
      gradient_estimator: registered name, `GradientEstimator`, or a
        `tfp.vi.GradientEstimators` value (see `tge.vi.losses.resolve_estimator`).
        Default value: `None` (`"reparameterization"`, or `"iwae"` for
        `importance_sample_size > 1`: what `tfp.vi` does).
      gradient_reuse: `None`, or a `tge.reuse.ISAG` for minibatched VI. Then
        `target_log_prob_fn(theta, batch_index)` returns the batch's term
        `log p_b(θ)` (with `Σ_b log p_b = log p(x, θ)`) for `theta` of shape
        `[sample_size, D]`, step `t` visits batch `t mod num_batches`, and the
        surrogate must be `tfd.MultivariateNormalDiag` or `...TriL`.
      num_batches: Python `int`, required with `gradient_reuse`.

    Returns:
      The trace, as `tfp.vi.fit_surrogate_posterior` returns it.

    #### Examples

    ```python
    q = tfd.Normal(tf.Variable(0.), tfp.util.TransformedVariable(1., tfb.Softplus()))
    losses = tge.vi.fit_surrogate_posterior(
        lambda z: tfd.Normal(2., 0.5).log_prob(z), q,
        optimizer=keras.optimizers.Adam(0.1), num_steps=200,
        gradient_estimator="stl", jit_compile=True, seed=0)
    ```
    """
    _check_optimizer(optimizer)
    check_keras_backend(
        "tge.vi.fit_surrogate_posterior", optimizer, surrogate_posterior, trainable_variables
    )
    importance_sample_size = static_importance_sample_size(importance_sample_size)
    if gradient_reuse is not None:
        loss_fn, trainable_variables = _reuse_loss(
            target_log_prob_fn,
            surrogate_posterior,
            discrepancy_fn,
            sample_size,
            importance_sample_size,
            trainable_variables,
            gradient_estimator,
            gradient_reuse,
            num_batches,
        )
    else:
        if num_batches is not None:
            raise ValueError(
                "`num_batches` is used with `gradient_reuse` (e.g. tge.reuse.ISAG(...)); "
                "without it the target is the full-data log density."
            )
        loss_fn = _estimator_loss(
            target_log_prob_fn,
            surrogate_posterior,
            discrepancy_fn,
            sample_size,
            importance_sample_size,
            gradient_estimator,
        )
    trace = tfp.math.minimize(
        loss_fn,
        num_steps=num_steps,
        optimizer=optimizer,
        convergence_criterion=convergence_criterion,
        trainable_variables=trainable_variables,
        trace_fn=trace_fn,
        jit_compile=jit_compile,
        seed=None if seed is None else sanitize_seed(seed),
        name=name,
    )
    if gradient_reuse is not None:
        _warn_unless_stationary(surrogate_posterior, target_log_prob_fn, num_batches, optimizer)
    return trace


# Scale balance ρ outside [1/10, 10]: a scale over 3x off its stationary value (see
# tfp_gradest.reuse.stationarity; converged fits measured 0.7-3.1, a collapsed one 2e-7).
_BALANCE_RANGE = (0.1, 10.0)


def _warn_unless_stationary(surrogate_posterior, target_log_prob_fn, num_batches, optimizer):
    """After a minibatched fit, warns (naming the learning rate) if it diverged or its scales
    collapsed."""
    from tfp_gradest.reuse.stationarity import scale_balance

    learning_rate = getattr(optimizer, "learning_rate", None)
    try:
        learning_rate = f"{float(learning_rate):.3g}"
    except (TypeError, ValueError):
        learning_rate = repr(learning_rate)  # a schedule: name it as it is
    variables = surrogate_posterior.trainable_variables
    if not all(np.all(np.isfinite(v.numpy())) for v in variables):
        warnings.warn(
            "fit_surrogate_posterior diverged: the surrogate's parameters are not finite. "
            f"Reduce the optimizer's learning rate (learning_rate={learning_rate}).",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    balance = scale_balance(
        surrogate_posterior, target_log_prob_fn, int(num_batches), 16, tf.constant([0, 1])
    ).numpy()
    low, high = _BALANCE_RANGE
    if np.all((balance >= low) & (balance <= high)):
        return
    collapsed = not np.all(balance >= low)
    what = (
        "scales collapsed (far narrower than the target's curvature warrants): the fit "
        "diverged and was caught by the scale transform. Reduce the optimizer's learning rate"
        if collapsed
        else "scales are still far wider than the target's curvature warrants: the fit has not "
        "converged. Increase num_steps or the learning rate"
    )
    warnings.warn(
        f"fit_surrogate_posterior: the surrogate is not at a stationary point of the ELBO; its "
        f"{what} (learning_rate={learning_rate}). Scale balance -C_jj E[d_j log p * eps_j] "
        f"(1 at a stationary point) per coordinate: {np.array2string(balance, precision=3)}.",
        RuntimeWarning,
        stacklevel=3,
    )


def _check_optimizer(optimizer):
    """Raises a `TypeError` naming `optimizer` before anything is traced."""
    if not callable(getattr(optimizer, "apply_gradients", None)):
        raise TypeError(
            "`optimizer` must be an optimizer with `apply_gradients`, e.g. "
            "keras.optimizers.Adam(0.05). Received: "
            f"optimizer={optimizer!r}"
        )


def _estimator_loss(
    target_log_prob_fn,
    surrogate_posterior,
    discrepancy_fn,
    sample_size,
    importance_sample_size,
    gradient_estimator,
):
    """`seed -> loss` of a gradient estimator, validated before anything is traced."""
    estimator = resolve_estimator(gradient_estimator, importance_sample_size)
    sample_size, importance_sample_size = estimator.validate(
        surrogate_posterior, sample_size, importance_sample_size, discrepancy_fn, target_log_prob_fn
    )
    loss = functools.partial(
        estimator.loss,
        target_log_prob_fn,
        surrogate_posterior,
        sample_size=sample_size,
        importance_sample_size=importance_sample_size,
        discrepancy_fn=discrepancy_fn,
    )

    def loss_fn(seed=None):
        return loss(seed=seed)

    return loss_fn


def _reuse_loss(
    target_log_prob_fn,
    surrogate_posterior,
    discrepancy_fn,
    sample_size,
    importance_sample_size,
    trainable_variables,
    gradient_estimator,
    gradient_reuse,
    num_batches,
):
    """`(seed -> I-SAG step loss, the surrogate's variables)`, after checking the combination
    applies."""
    from tfp_gradest.reuse import ISAG

    if not isinstance(gradient_reuse, ISAG):
        raise TypeError(
            "`gradient_reuse` must be a tge.reuse.ISAG instance. "
            f"Received: {type(gradient_reuse).__name__}"
        )
    if num_batches is None:
        raise ValueError("`num_batches` is required with `gradient_reuse`.")
    if gradient_estimator is not None and not isinstance(
        resolve_estimator(gradient_estimator), Reparameterization
    ):
        raise ValueError(
            "I-SAG re-uses reparameterisation gradients; `gradient_estimator` must be None or "
            f"'reparameterization' with `gradient_reuse`. Received: {gradient_estimator!r}"
        )
    if importance_sample_size != 1 or discrepancy_fn is not tfp.vi.kl_reverse:
        raise ValueError(
            "I-SAG fits the ELBO: use `importance_sample_size=1` and "
            "`discrepancy_fn=tfp.vi.kl_reverse` with `gradient_reuse`. Received: "
            f"importance_sample_size={importance_sample_size!r}, discrepancy_fn={discrepancy_fn!r}"
        )
    if trainable_variables is not None:
        raise ValueError(
            "With `gradient_reuse` the surrogate's own variables are fitted; "
            "leave `trainable_variables=None`."
        )
    isag = gradient_reuse.build(surrogate_posterior, num_batches, sample_size)

    def loss_fn(seed=None):
        return isag.loss(target_log_prob_fn, seed=seed)

    return loss_fn, isag.variables
