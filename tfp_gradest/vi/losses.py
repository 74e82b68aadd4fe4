"""`monte_carlo_variational_loss` with a choice of gradient estimator."""

import tensorflow_probability as tfp

from tfp_gradest import estimators

__all__ = ["monte_carlo_variational_loss", "resolve_estimator"]


def resolve_estimator(gradient_estimator, importance_sample_size=1):
    """The estimator for `gradient_estimator`, defaulting as `tfp.vi` does.

    `None` means pathwise gradients of the objective `tfp.vi` would minimise:
    `"reparameterization"` (the ELBO) for `importance_sample_size == 1`, and
    `"iwae"` (the importance-weighted bound, reparameterised) above that.
    """
    if gradient_estimator is None:
        multi_sample = isinstance(importance_sample_size, int) and importance_sample_size > 1
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
):
    """Monte Carlo variational loss: `tfp.vi`'s contract plus a gradient estimator.

    The value is what `tfp.vi.monte_carlo_variational_loss` reports (the negative
    ELBO, or the negative importance-weighted bound for
    `importance_sample_size > 1`); the gradient is the chosen estimator's.

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
      gradient_estimator: registered name (see `tge.estimators.names()`) or a
        `tge.estimators.GradientEstimator`. Default value: `None`, see
        `resolve_estimator`.

    Returns:
      loss: Tensor of shape `surrogate_posterior.batch_shape`.

    #### Examples

    ```python
    loss = tge.vi.monte_carlo_variational_loss(
        target_log_prob_fn, q, sample_size=8, gradient_estimator="stl", seed=1)
    ```
    """
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
