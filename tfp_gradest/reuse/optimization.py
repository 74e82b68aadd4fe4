"""`fit`: minibatched VI with gradient re-use (I-SAG), its own entry point.

Not a `tfp.vi.fit_surrogate_posterior` drop-in, on purpose: the target takes a
batch index, the surrogate must be an affine Gaussian, the objective is the ELBO,
and after the fit the scales are checked (`stationarity.warn_unless_stationary`).
"""

import tensorflow_probability as tfp

from tfp_gradest._util.seeds import sanitize_seed
from tfp_gradest.reuse.isag import ISAG
from tfp_gradest.reuse.stationarity import warn_unless_stationary
from tfp_gradest.vi.losses import check_keras_backend
from tfp_gradest.vi.optimization import check_optimizer

__all__ = ["fit"]


def _trace_loss(traceable_quantities):
    return traceable_quantities.loss


def fit(
    batch_log_prob_fn,
    surrogate_posterior,
    optimizer,
    num_steps,
    num_batches,
    *,
    gradient_reuse=None,
    sample_size=1,
    convergence_criterion=None,
    trace_fn=_trace_loss,
    jit_compile=None,
    seed=None,
    check_stationarity=True,
    name="reuse_fit",
):
    """Fits a Gaussian surrogate to a target split into minibatch terms, re-using gradients.

    How this differs from `tge.vi.fit_surrogate_posterior` (and `tfp.vi`'s):

    * the target is `batch_log_prob_fn(theta, batch_index)`, the batch's term
      `log p_b(θ)` with `Σ_b log p_b(θ) = log p(x, θ)`, for `theta` of shape
      `[sample_size, D]` (one leading sample axis, one event axis), and
      step `t` visits batch `t mod num_batches`;
    * `surrogate_posterior` is a `tfd.MultivariateNormalDiag` or
      `tfd.MultivariateNormalTriL` with batch shape `[]`, and its own trainable
      variables are fitted (no `trainable_variables`);
    * the objective is the ELBO with reparameterisation gradients (no
      `discrepancy_fn`, `importance_sample_size` or `gradient_estimator`);
    * after the loop, unless `check_stationarity=False`, one fresh sweep over
      the batches checks each scale's stationarity condition and emits a
      `RuntimeWarning` naming the learning rate if the fit diverged or its
      scales collapsed, or suggesting more steps if they are still far too
      wide (see `tfp_gradest.reuse.stationarity`).

    The loop is `tfp.math.minimize`, as in `tfp.vi`; Keras 3 optimizers work.

    Args:
      batch_log_prob_fn: Python callable `(theta [sample_size, D], batch_index) ->
        [sample_size]`, the batch's term of the unnormalised log density.
      surrogate_posterior: `tfd.MultivariateNormalDiag` or `...TriL` with
        trainable variables.
      optimizer: a Keras 3 (or tf_keras) optimizer; a decaying learning rate
        suits (see the gradient re-use guide).
      num_steps: Python `int`, maximum number of steps.
      num_batches: Python `int`, the number of batches `N`.
      gradient_reuse: a `tge.reuse.ISAG` (its memory is built for this fit
        and can be read afterwards, e.g. `num_reused`). Default value: `None`
        (`tge.reuse.ISAG()`).
      sample_size: Python `int`, draws `M` per step. Default value: `1`.
      convergence_criterion: optional `tfp.optimizer.convergence_criteria`
        instance. Default value: `None`.
      trace_fn: callable of the `tfp.math.MinimizeTraceableQuantities`.
        Default value: the loss.
      jit_compile: compile the step with XLA. Default value: `None`.
      seed: PRNG seed; see `tfp.random.sanitize_seed`. Default value: `None`
        (the `ISAG`'s own `seed`, folded with the step).
      check_stationarity: Python `bool`, run the post-fit check (it evaluates
        the target on 16 fresh draws per batch). Default value: `True`.
      name: Python `str`. Default value: `"reuse_fit"`.

    Returns:
      The trace, as `tfp.math.minimize` returns it (by default the loss per
      step: the negative ELBO estimate, whose value at a re-use step is the
      self-normalised estimate from the stored samples).

    Raises:
      TypeError: `surrogate_posterior` is not an affine Gaussian, `gradient_reuse`
        is not an `ISAG`, a size is not an integer, or `optimizer` has no
        `apply_gradients`.
      ValueError: a size is below 1.

    #### Examples

    ```python
    x_batches = tf.reshape(x, [num_batches, -1, d])
    def batch_log_prob_fn(theta, batch_index):          # theta: [M, D]
        xb = tf.gather(x_batches, batch_index)
        return prior.log_prob(theta) / num_batches + log_likelihood(xb, theta)

    q = tfd.MultivariateNormalDiag(tf.Variable(tf.zeros(D)),
            tfp.util.TransformedVariable(tf.ones(D), tfb.Softplus()))
    schedule = keras.optimizers.schedules.InverseTimeDecay(2e-3, 150, 1.0)
    losses = tge.reuse.fit(
        batch_log_prob_fn, q, keras.optimizers.SGD(schedule), num_steps=2000,
        num_batches=num_batches, gradient_reuse=tge.reuse.ISAG(rho=0.5, alpha=0.9),
        sample_size=4, jit_compile=True, seed=0)
    ```
    """
    check_optimizer(optimizer)
    check_keras_backend("tge.reuse.fit", optimizer, surrogate_posterior)
    if gradient_reuse is None:
        gradient_reuse = ISAG()
    if not isinstance(gradient_reuse, ISAG):
        raise TypeError(
            "`gradient_reuse` must be a tge.reuse.ISAG instance, e.g. "
            "tge.reuse.ISAG(rho=0.5, alpha=0.9). "
            f"Received: gradient_reuse={gradient_reuse!r} ({type(gradient_reuse).__name__})"
        )
    isag = gradient_reuse.build(surrogate_posterior, num_batches, sample_size)

    def loss_fn(seed=None):
        return isag.loss(batch_log_prob_fn, seed=seed)

    trace = tfp.math.minimize(
        loss_fn,
        num_steps=num_steps,
        optimizer=optimizer,
        convergence_criterion=convergence_criterion,
        trainable_variables=isag.variables,
        trace_fn=trace_fn,
        jit_compile=jit_compile,
        seed=None if seed is None else sanitize_seed(seed),
        name=name,
    )
    if check_stationarity:
        warn_unless_stationary(surrogate_posterior, batch_log_prob_fn, isag.num_batches, optimizer)
    return trace
