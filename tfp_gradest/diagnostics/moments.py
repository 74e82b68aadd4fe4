"""Gradient moments over fresh noise draws: mean, variance, SNR, bias z-scores.

The moments, the SNR and the bias z-scores are numpy (or, for `running_moments_update`,
plain arithmetic on any backend's tensors), so they serve every Keras backend; only the
draw loops (`gradient_draws`, `gradient_sampler`, `draw_seeds`) use TensorFlow and
TFP, imported when first called.
"""

import functools
from typing import NamedTuple

import numpy as np

__all__ = [
    "GradientMoments",
    "bias_z_scores",
    "compiled_function",
    "draw_seeds",
    "gradient_draws",
    "gradient_moments",
    "gradient_sampler",
    "moments_from_running",
    "running_moments_update",
    "signal_to_noise_ratio",
]


def gradient_draws(loss_fn, variables, num_draws, seed, jit_compile=True):
    """Draws `num_draws` independent gradients of `loss_fn(seed)` w.r.t. `variables`.

    Each draw gets its own stateless seed split from `seed`, so a run is
    reproducible and any two draws are independent. The loop is one compiled
    `tf.map_fn` (no Python per draw); `gradient_sampler` returns that compiled
    loop, to draw again without compiling again.

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
    return gradient_sampler(loss_fn, variables, jit_compile)(draw_seeds(seed, num_draws))


def draw_seeds(seed, num_draws):
    """`num_draws` independent stateless seeds, shape `[num_draws, 2]`, split from `seed`."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    from tfp_gradest._util.seeds import sanitize_seed

    # A Tensor `n` makes TFP return one `[n, 2]` Tensor (the same values as the list it
    # returns for a Python int, without unstacking and restacking `n` eager tensors).
    return tfp.random.split_seed(sanitize_seed(seed), tf.constant(num_draws, tf.int32))


def gradient_sampler(loss_fn, variables, jit_compile=True):
    """The compiled loop of `gradient_draws`: `seeds [N, 2] -> gradients [N, ...]` per variable.

    Calling it again with seeds of the same shape reuses the compiled code.
    """
    import tensorflow as tf

    variables = list(variables)
    signature = [tf.TensorSpec(v.shape, v.dtype) for v in variables]

    def one_draw(draw_seed):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = tf.reduce_sum(loss_fn(draw_seed))
        return tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return compiled_function(functools.partial(_map_draws, one_draw, signature), jit_compile)


def compiled_function(fn, jit_compile):
    """`tf.function(fn)` (XLA if `jit_compile`, no autograph), counted as its own function.

    TensorFlow's frequent-retracing warning counts traces per *code object*, so the
    closures that several samplers or monitors build from one `def` (each traced once,
    by design: one per estimator, K or model) are counted together and reported as
    retracing. Wrapped in a `functools.partial`, which has no code object, each compiled
    function is counted on its own, and a real retrace of one of them still warns.
    """
    import tensorflow as tf

    return tf.function(functools.partial(fn), jit_compile=bool(jit_compile), autograph=False)


def _map_draws(one_draw, signature, seeds):
    import tensorflow as tf

    return tf.map_fn(one_draw, seeds, fn_output_signature=signature)


class GradientMoments(NamedTuple):
    """Element-wise moments of gradient draws (numpy arrays shaped like the variable)."""

    mean: np.ndarray
    variance: np.ndarray
    standard_error: np.ndarray
    num_draws: int
    dtype: type = np.float64  # of the draws: sets the rounding tolerance of `bias_z_scores`

    @property
    def snr(self):
        """The element-wise terms of `signal_to_noise_ratio`: `|E g| / sd(g)` with `(E g)²`
        estimated as `max(mean² - variance/N, 0)` (inf where the variance is zero and that
        estimate is not, NaN where both are)."""
        return _elementwise_snr(self.mean, self.variance / self.num_draws, self.variance)


def gradient_moments(draws):
    """Moments of one variable's gradient draws (leading axis = draws), computed in float64."""
    draws = np.asarray(draws)
    dtype = draws.dtype.type if np.issubdtype(draws.dtype, np.floating) else np.float64
    draws = draws.astype(np.float64)
    n = draws.shape[0]
    variance = draws.var(axis=0, ddof=1)
    return GradientMoments(draws.mean(axis=0), variance, np.sqrt(variance / n), n, dtype)


def running_moments_update(count, mean, m2, draw):
    """One step of Welford's running moments: `(mean, m2)` after seeing `draw`, the
    `count`-th draw (1-based).

    ```none
    δ = x - mean;  mean += δ / count;  m2 += δ · (x - mean)
    ```

    `m2 / (count - 1)` is then the unbiased sample variance of the draws so far
    (`moments_from_running`). Stable where the two-pass sum of squares loses
    digits (Welford 1962), and it needs only two arrays the shape of one draw, so
    a compiled loop over draws never holds them all. Plain arithmetic, so `mean`,
    `m2` and `draw` may be numpy arrays or any Keras backend's tensors (`count` a
    scalar of their dtype).
    """
    delta = draw - mean
    mean = mean + delta / count
    return mean, m2 + delta * (draw - mean)


def moments_from_running(mean, m2, num_draws, dtype=np.float64):
    """`GradientMoments` from Welford's running `mean` and `m2` over `num_draws` draws.

    The same moments `gradient_moments` computes from the draws themselves (up to
    rounding): variance `m2 / (num_draws - 1)` (0 when `num_draws < 2`).
    `dtype` is that of the draws (it sets `bias_z_scores`' rounding tolerance).
    """
    mean = np.asarray(mean, dtype=np.float64)
    variance = np.asarray(m2, dtype=np.float64) / max(num_draws - 1, 1)
    return GradientMoments(mean, variance, np.sqrt(variance / max(num_draws, 1)), num_draws, dtype)


def bias_z_scores(draws, reference, reference_standard_error=0.0):
    """`(mean(draws) - reference) / sqrt(standard_error² + reference_standard_error²)`,
    element-wise.

    `draws` are one variable's gradient draws (leading axis = draws), or their
    `GradientMoments`.

    Under the null hypothesis that the estimator is unbiased for `reference`,
    each score is approximately standard normal (central limit theorem over the
    draws), so `|z| < 4` fails with probability about 6e-5 per element. A
    reference that is itself a Monte Carlo mean of independent draws passes its
    standard error, which adds in quadrature. Where both standard errors are
    exactly zero (all draws equal), a difference within rounding of the draws'
    dtype (4 ulps of the larger magnitude) scores 0 and a larger one `inf`:
    the tolerance follows the dtype, so float32 rounding is not called a bias
    and a real bias of 1e-20 in float64 is not called zero.
    """
    moments = draws if isinstance(draws, GradientMoments) else gradient_moments(draws)
    reference = np.asarray(reference, dtype=np.float64)
    diff = moments.mean - reference
    error = np.sqrt(moments.standard_error**2 + np.square(reference_standard_error))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / error
    finfo = np.finfo(moments.dtype)
    rounding = 4 * finfo.eps * np.maximum(np.abs(moments.mean), np.abs(reference)) + finfo.tiny
    return np.where((error == 0) & (np.abs(diff) <= rounding), 0.0, z)


def signal_to_noise_ratio(moments, signal=None):
    """The package's one SNR: the mean over elements of `|E g_i| / sd(g_i)`.

    Rainforth et al. (2018) and Tucker et al. (2019) define the SNR of a
    gradient estimator element-wise as `|E g| / sd(g)`; this averages it over
    all elements of all variables. `(E g_i)²` is estimated without the
    `var/N` bias of a squared sample mean, as `max(mean_i² - var_i/N, 0)`, so
    pure noise scores about 0 rather than `N^-1/2`. Elements with zero variance
    (their SNR is undefined or infinite, e.g. STL at an exact optimum) are left
    out; if none remain the result is NaN.

    Args:
      moments: a `GradientMoments`, or a list of them (one per variable).
      signal: optional moments of the same shapes from another estimator
        unbiased for the same gradient, whose mean is used as `E g` (IWAE's own
        mean cannot be resolved at large `K`; IWAE-DReG's can).

    Returns:
      A Python float.

    >>> import numpy as np
    >>> draws = np.array([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0], [3.0, -2.0]])
    >>> round(signal_to_noise_ratio(gradient_moments(draws)), 3)  # (1.658 + 0) / 2
    0.829
    """
    moments = _as_list(moments)
    signal = moments if signal is None else _as_list(signal)
    variance = np.concatenate([np.ravel(m.variance) for m in moments])
    mean = np.concatenate([np.ravel(m.mean) for m in signal])
    mean_variance = np.concatenate([np.ravel(m.variance / m.num_draws) for m in signal])
    keep = variance > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(_elementwise_snr(mean[keep], mean_variance[keep], variance[keep])))


def _elementwise_snr(mean, mean_variance, variance):
    """`sqrt(max(mean² - mean_variance, 0) / variance)`: the package's one SNR, per element."""
    squared_signal = np.maximum(np.square(mean) - mean_variance, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(squared_signal / variance)


def _as_list(moments):
    return [moments] if isinstance(moments, GradientMoments) else list(moments)
