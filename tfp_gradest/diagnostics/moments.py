"""Gradient moments over fresh noise draws: mean, variance, SNR, bias z-scores."""

from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest._util.seeds import sanitize_seed

__all__ = ["GradientMoments", "gradient_draws", "gradient_moments", "bias_z_scores"]


def gradient_draws(loss_fn, variables, num_draws, seed, jit_compile=True):
    """Draws `num_draws` independent gradients of `loss_fn(seed)` w.r.t. `variables`.

    Each draw gets its own stateless seed split from `seed`, so a run is
    reproducible and any two draws are independent. The loop is one compiled
    `tf.map_fn` (no Python per draw).

    Args:
      loss_fn: callable `seed -> scalar loss`, e.g.
        `lambda s: est.loss(target, q, seed=s)`.
      variables: list of `tf.Variable` to differentiate with respect to.
      num_draws: Python `int`.
      seed: PRNG seed; see `tfp.random.sanitize_seed`.
      jit_compile: compile with XLA. Default value: `True`.

    Returns:
      A list of Tensors, one per variable, of shape `[num_draws] + var.shape`.
      A variable the loss does not reach gets zeros.
    """
    variables = list(variables)
    signature = [tf.TensorSpec(v.shape, v.dtype) for v in variables]

    def one_draw(draw_seed):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = tf.reduce_sum(loss_fn(draw_seed))
        return tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    @tf.function(jit_compile=jit_compile, autograph=False)
    def run(seeds):
        return tf.map_fn(one_draw, seeds, fn_output_signature=signature)

    seeds = tfp.random.split_seed(sanitize_seed(seed), num_draws)
    return run(tf.stack(seeds) if isinstance(seeds, (list, tuple)) else seeds)


class GradientMoments(NamedTuple):
    """Element-wise moments of gradient draws (numpy arrays shaped like the variable)."""

    mean: np.ndarray
    variance: np.ndarray
    standard_error: np.ndarray
    num_draws: int

    @property
    def snr(self):
        """`|E g| / sd(g)` element-wise (inf where the variance is zero and the mean is not)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(self.mean) / np.sqrt(self.variance)


def gradient_moments(draws):
    """Moments of one variable's gradient draws (leading axis = draws)."""
    draws = np.asarray(draws, dtype=np.float64)
    n = draws.shape[0]
    variance = draws.var(axis=0, ddof=1)
    return GradientMoments(draws.mean(axis=0), variance, np.sqrt(variance / n), n)


def bias_z_scores(draws, reference):
    """`(mean(draws) - reference) / standard_error`, element-wise.

    Under the null hypothesis that the estimator is unbiased for `reference`,
    each score is approximately standard normal (central limit theorem over the
    draws), so `|z| < 4` fails with probability about 6e-5 per element. Where the
    standard error is exactly zero, a nonzero difference gives `inf`.
    """
    moments = gradient_moments(draws)
    diff = moments.mean - np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / moments.standard_error
    return np.where((moments.standard_error == 0) & (np.abs(diff) < 1e-12), 0.0, z)
