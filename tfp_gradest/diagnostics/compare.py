"""Run estimators side by side on one problem: bias, variance, SNR, step time, work-normalised variance."""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfp_gradest import estimators as estimators_lib
from tfp_gradest.diagnostics.moments import bias_z_scores, gradient_draws, gradient_moments
from tfp_gradest.diagnostics.timing import median_step_seconds

__all__ = ["EstimatorReport", "compare_estimators"]


class EstimatorReport(NamedTuple):
    """One row of a comparison. Variances and SNRs are averaged over all gradient elements."""

    estimator: str
    mean_variance: float
    mean_snr: float
    max_abs_bias_z: float  # NaN when the problem has no exact gradient
    step_seconds: float
    work_normalized_variance: float  # mean_variance * step_seconds

    def as_dict(self):
        return self._asdict()


def compare_estimators(
    problem,
    estimators,
    sample_size=1,
    importance_sample_size=1,
    num_draws=1000,
    seed=0,
    time_steps=True,
    progress=None,
):
    """Measures each estimator's gradient on `problem` at its current parameters.

    Args:
      problem: an object with `target_log_prob`, `surrogate`, `variables` and
        optionally `exact_objective()` (see `tfp_gradest.problems`).
      estimators: names or `GradientEstimator`s.
      sample_size, importance_sample_size: Python `int`s, passed to `loss`.
      num_draws: Python `int`, gradient draws per estimator.
      seed: PRNG seed; every estimator sees the same seed.
      time_steps: measure one XLA-compiled gradient step's wall time.
      progress: optional callable `(index, total, name)` called before each estimator.

    Returns:
      A list of `EstimatorReport`, in the order given.
    """
    reference = _exact_gradient(problem)
    reports = []
    for index, identifier in enumerate(estimators):
        estimator = estimators_lib.get(identifier)
        label = identifier if isinstance(identifier, str) else repr(estimator)
        if progress is not None:
            progress(index, len(estimators), label)

        def loss_fn(seed, estimator=estimator):
            return estimator.loss(
                problem.target_log_prob,
                problem.surrogate,
                sample_size,
                importance_sample_size,
                seed=seed,
            )

        draws = gradient_draws(loss_fn, problem.variables, num_draws, seed)
        moments = [gradient_moments(d) for d in draws]
        variance = float(np.mean(np.concatenate([m.variance.ravel() for m in moments])))
        snr = float(np.nanmean(np.concatenate([np.ravel(m.snr) for m in moments])))
        bias = (
            float(max(np.max(np.abs(bias_z_scores(d, r))) for d, r in zip(draws, reference)))
            if reference is not None
            else float("nan")
        )
        seconds = _step_seconds(loss_fn, problem.variables) if time_steps else float("nan")
        reports.append(EstimatorReport(label, variance, snr, bias, seconds, variance * seconds))
    return reports


def _exact_gradient(problem):
    if not hasattr(problem, "exact_objective"):
        return None
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(problem.exact_objective())
    return [g.numpy() for g in tape.gradient(loss, problem.variables)]


def _step_seconds(loss_fn, variables):
    @tf.function(jit_compile=True, autograph=False)
    def step(seed):
        with tf.GradientTape() as tape:
            loss = loss_fn(seed)
        return tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return median_step_seconds(step, (tf.constant([1, 2], tf.int32),))
