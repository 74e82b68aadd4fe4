"""Statistics of gradient draws: moments, their streaming and merged forms, SNR, bias z-scores.

numpy only (the streaming update is plain arithmetic on any backend's tensors), so the
callbacks use it on every Keras backend. The loops that draw the gradients are in
`draws.py` (a TFP loss with a seed) and `model_gradients.py` (a Keras model's own noise).
Each statistic has one implementation: moments of drawn arrays by numpy's two-pass
variance, and moments accumulated a draw or a batch at a time by one merge formula
(`merge_moments`), never by a sum of squares.
"""

from typing import NamedTuple

import numpy as np

__all__ = [
    "GradientMoments",
    "bias_z_scores",
    "gradient_moments",
    "merge_moments",
    "moments_from_running",
    "running_moments_update",
    "signal_to_noise_ratio",
]


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
    """Moments of one variable's gradient draws (leading axis = draws), computed in float64.

    The variance is the unbiased sample variance (`ddof=1`, numpy's two-pass formula).
    """
    draws = np.asarray(draws)
    dtype = draws.dtype.type if np.issubdtype(draws.dtype, np.floating) else np.float64
    draws = draws.astype(np.float64)
    n = draws.shape[0]
    variance = draws.var(axis=0, ddof=1)
    return GradientMoments(draws.mean(axis=0), variance, np.sqrt(variance / n), n, dtype)


def _merge(count_a, mean_a, m2_a, count_b, mean_b, m2_b):
    """`(mean, m2)` of two disjoint sets of draws from their counts, means and `m2`s (the sums
    of squared deviations from their own means); Chan, Golub & LeVeque (1979)::

        δ = mean_b - mean_a;  n = n_a + n_b
        mean = mean_a + δ n_b / n;  m2 = m2_a + m2_b + δ² n_a n_b / n

    Plain arithmetic: numpy arrays or any Keras backend's tensors (counts of their dtype).
    """
    count = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    return mean, m2_a + m2_b + delta * delta * (count_a * count_b / count)


def running_moments_update(count, mean, m2, draw):
    """One step of Welford's running moments: `(mean, m2)` after seeing `draw`, the
    `count`-th draw (1-based).

    ```none
    δ = x - mean;  mean += δ / count;  m2 += δ² (count - 1) / count
    ```

    (`merge_moments`' formula with a set of one draw.) `m2 / (count - 1)` is then the
    unbiased sample variance of the draws so far (`moments_from_running`). Stable where
    a sum of squares loses digits (Welford 1962), and it needs only two arrays the shape
    of one draw, so a compiled loop over draws never holds them all. Plain arithmetic, so
    `mean`, `m2` and `draw` may be numpy arrays or any Keras backend's tensors (`count` a
    scalar of their dtype).
    """
    return _merge(count - 1, mean, m2, 1, draw, 0 * m2)


def merge_moments(a, b):
    """The `GradientMoments` of the draws of `a` and `b` together (two disjoint sets of draws
    of the same variable), without the draws: e.g. of draws made a batch at a time.

    The same moments `gradient_moments` computes from all the draws (up to rounding),
    by the pairwise formula of Chan, Golub & LeVeque (1979), which is stable where a
    running sum of squares is not. `dtype` is the less precise of the two.
    """
    if a.num_draws == 0:
        return b
    if b.num_draws == 0:
        return a
    mean, m2 = _merge(float(a.num_draws), a.mean, _m2(a), float(b.num_draws), b.mean, _m2(b))
    dtype = a.dtype if np.finfo(a.dtype).eps >= np.finfo(b.dtype).eps else b.dtype
    return moments_from_running(mean, m2, a.num_draws + b.num_draws, dtype)


def _m2(moments):
    """The sum of squared deviations from the mean: 0 for one draw (whose sample variance,
    from `gradient_moments`, is NaN)."""
    if moments.num_draws < 2:
        return np.zeros_like(np.asarray(moments.mean, dtype=np.float64))
    return moments.variance * (moments.num_draws - 1)


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
