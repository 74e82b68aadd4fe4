"""`fit_surrogate_posterior`: `tfp.vi`'s optimiser loop with a choice of gradient estimator."""

import functools
import warnings

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest._util.seeds import sanitize_seed
from tfp_gradest.vi.losses import (
    check_keras_backend,
    resolve_estimator,
    static_importance_sample_size,
)

__all__ = ["check_optimizer", "fit_surrogate_posterior"]


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
    noise="iid",
    **deprecated_kwargs,
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
      noise: `"iid"` or `"rqmc"` (randomised quasi-Monte Carlo base normals, see
        `tge.estimators.GradientEstimator.loss`). Default value: `"iid"`.
      **deprecated_kwargs: `gradient_reuse` and `num_batches`, deprecated: they
        change the target's signature, so minibatched VI with gradient re-use
        has its own entry point, `tge.reuse.fit` (a `DeprecationWarning` shows
        the call to write). They will be removed in the next release.

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
    gradient_reuse = deprecated_kwargs.pop("gradient_reuse", None)
    num_batches = deprecated_kwargs.pop("num_batches", None)
    if deprecated_kwargs:
        raise TypeError(
            "fit_surrogate_posterior() got an unexpected keyword argument "
            f"{sorted(deprecated_kwargs)[0]!r}"
        )
    if gradient_reuse is not None or num_batches is not None:
        if noise != "iid":
            raise ValueError(
                "`noise` is not an option of gradient re-use (tge.reuse.fit). "
                f"Received: noise={noise!r}"
            )
        return _deprecated_reuse_fit(
            target_log_prob_fn,
            surrogate_posterior,
            optimizer,
            num_steps,
            convergence_criterion=convergence_criterion,
            trace_fn=trace_fn,
            discrepancy_fn=discrepancy_fn,
            sample_size=sample_size,
            importance_sample_size=importance_sample_size,
            trainable_variables=trainable_variables,
            jit_compile=jit_compile,
            seed=seed,
            name=name,
            gradient_estimator=gradient_estimator,
            gradient_reuse=gradient_reuse,
            num_batches=num_batches,
        )
    check_optimizer(optimizer)
    check_keras_backend(
        "tge.vi.fit_surrogate_posterior", optimizer, surrogate_posterior, trainable_variables
    )
    importance_sample_size = static_importance_sample_size(importance_sample_size)
    # The estimator and its arguments are checked before anything is traced.
    estimator = resolve_estimator(gradient_estimator, importance_sample_size)
    sample_size, importance_sample_size = estimator.validate(
        surrogate_posterior,
        sample_size,
        importance_sample_size,
        discrepancy_fn,
        target_log_prob_fn,
        noise,
    )
    loss = functools.partial(
        estimator.loss,
        target_log_prob_fn,
        surrogate_posterior,
        sample_size=sample_size,
        importance_sample_size=importance_sample_size,
        discrepancy_fn=discrepancy_fn,
        noise=noise,
    )

    def loss_fn(seed=None):
        return loss(seed=seed)

    return tfp.math.minimize(
        loss_fn,
        num_steps=num_steps,
        optimizer=optimizer,
        convergence_criterion=convergence_criterion,
        trainable_variables=trainable_variables,
        trace_fn=trace_fn,
        jit_compile=jit_compile,
        seed=_minimize_seed(seed),
        name=name,
    )


def _minimize_seed(seed):
    """`seed`, checked and made stateless, as `tfp.math.minimize` should receive it.

    A static seed (an int, a pair, a constant) is passed as a NumPy pair, as `tfp.vi`
    passes a user's seed on: `minimize` sanitises it inside its traced function,
    where it is a constant, and XLA folds the seed arithmetic of the first step. An
    eager Tensor would be captured as an input instead, and the compiled program
    would keep that arithmetic (`benchmarks/vi_structured.py`'s compile times). The
    seed's value, and so every sample, is the same either way. A seed with no static
    value is passed as the Tensor it is.
    """
    if seed is None:
        return None
    seed = sanitize_seed(seed)
    static = tf.get_static_value(seed)
    return seed if static is None else static


def check_optimizer(optimizer):
    """Raises a `TypeError` naming `optimizer` unless it has `apply_gradients`.

    Called before anything is traced, by `fit_surrogate_posterior` and `tge.reuse.fit`.
    """
    if not callable(getattr(optimizer, "apply_gradients", None)):
        raise TypeError(
            "`optimizer` must be an optimizer with `apply_gradients`, e.g. "
            "keras.optimizers.Adam(0.05). Received: "
            f"optimizer={optimizer!r}"
        )


def _deprecated_reuse_fit(
    target_log_prob_fn,
    surrogate_posterior,
    optimizer,
    num_steps,
    *,
    discrepancy_fn,
    importance_sample_size,
    trainable_variables,
    gradient_estimator,
    gradient_reuse,
    num_batches,
    **kwargs,
):
    """`fit_surrogate_posterior(..., gradient_reuse=..., num_batches=...)`: warns, checks the
    arguments `tge.reuse.fit` does not take are at their defaults, and calls it."""
    if gradient_reuse is None:
        raise ValueError(
            "`num_batches` is used with gradient re-use, which has its own entry point: "
            "tge.reuse.fit(batch_log_prob_fn, surrogate_posterior, optimizer, num_steps, "
            "num_batches, gradient_reuse=tge.reuse.ISAG(...)). Without it the target is the "
            f"full-data log density; drop `num_batches`. Received: num_batches={num_batches!r}"
        )
    from tfp_gradest import reuse

    if not isinstance(gradient_reuse, reuse.ISAG):
        raise TypeError(
            "`gradient_reuse` must be a tge.reuse.ISAG instance. "
            f"Received: gradient_reuse={gradient_reuse!r} ({type(gradient_reuse).__name__})"
        )
    if num_batches is None:  # before the warning, which would spell `num_batches=None`
        raise ValueError(
            "`num_batches` is required with `gradient_reuse`: the number of batches the "
            "target is split into. Received: num_batches=None"
        )
    warnings.warn(
        "`gradient_reuse=` of tge.vi.fit_surrogate_posterior is deprecated and will be removed "
        "in the next release. Write tge.reuse.fit(target_log_prob_fn, surrogate_posterior, "
        f"optimizer, num_steps, num_batches={num_batches!r}, "
        f"gradient_reuse=tge.reuse.{gradient_reuse!r}, "
        f"sample_size={kwargs.get('sample_size', 1)!r}, ...) instead: the same target, taking "
        "(theta, batch_index); trace_fn, convergence_criterion, jit_compile, seed and name as "
        "before.",
        DeprecationWarning,
        stacklevel=3,
    )
    reparameterization = type(resolve_estimator("reparameterization"))
    if gradient_estimator is not None and not isinstance(
        resolve_estimator(gradient_estimator), reparameterization
    ):
        raise ValueError(
            "I-SAG re-uses reparameterisation gradients; `gradient_estimator` must be None or "
            "'reparameterization' with `gradient_reuse`. "
            f"Received: gradient_estimator={gradient_estimator!r}"
        )
    importance_sample_size = static_importance_sample_size(importance_sample_size)
    if importance_sample_size != 1 or discrepancy_fn is not tfp.vi.kl_reverse:
        raise ValueError(
            "I-SAG fits the ELBO: use `importance_sample_size=1` and "
            "`discrepancy_fn=tfp.vi.kl_reverse` with `gradient_reuse`. Received: "
            f"importance_sample_size={importance_sample_size!r}, discrepancy_fn={discrepancy_fn!r}"
        )
    if trainable_variables is not None:
        raise ValueError(
            "With `gradient_reuse` the surrogate's own variables are fitted; "
            "leave `trainable_variables=None`. Received: "
            f"trainable_variables={trainable_variables!r}"
        )
    return reuse.fit(
        target_log_prob_fn,
        surrogate_posterior,
        optimizer,
        num_steps,
        num_batches,
        gradient_reuse=gradient_reuse,
        **kwargs,
    )
