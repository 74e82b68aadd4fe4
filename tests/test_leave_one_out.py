"""Leave-one-out log-sum-exps and means (VIMCO, JVI): exact against brute force, linear
memory in K."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest.estimators.importance_weights import (
    leave_one_out_logsumexp,
    leave_one_out_mean,
)

tfd = tfp.distributions


def _brute_force(x):
    """Row `k` with entry `k` deleted, in float64 numpy: the `[K, K]` definition."""
    k = x.shape[1]
    lse, mean = np.empty_like(x), np.empty_like(x)
    for i in range(k):
        others = np.delete(x, i, axis=1)
        top = np.max(others, axis=1, keepdims=True)
        safe_top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            lse[:, i] = (safe_top + np.log(np.sum(np.exp(others - safe_top), 1, keepdims=True)))[
                :, 0
            ]
        mean[:, i] = np.mean(others, axis=1)
    return lse, mean


@pytest.mark.parametrize(
    "scale,offset", [(1.0, 0.0), (30.0, -1e4), (1e3, 5.0), (0.01, 100.0)], ids=str
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leave_one_out_matches_the_k_by_k_definition(scale, offset, dtype):
    x = np.random.default_rng(0).normal(size=(3, 7, 2)) * scale + offset
    x[0, 0, 0] = np.max(x) + 40.0  # one dominant weight: the row that would cancel
    x[1, 2, 0] = -np.inf  # a zero weight
    x[2, :, 1] = -np.inf
    x[2, 4, 1] = 0.3  # the only nonzero weight of a column
    lse, mean = _brute_force(x)
    got_lse = leave_one_out_logsumexp(tf.constant(x, dtype)).numpy()
    got_mean = leave_one_out_mean(tf.constant(x, dtype)).numpy()
    # Tolerance: a few ulps of the result's magnitude (the float64 reference is exact to ~1e-16).
    eps = np.finfo(dtype).eps
    for got, want in [(got_lse, lse), (got_mean, mean)]:
        finite = np.isfinite(want)
        np.testing.assert_array_equal(np.isfinite(got), finite)
        np.testing.assert_array_equal(got[~finite], want[~finite])
        np.testing.assert_allclose(
            got[finite], want[finite], rtol=16 * eps, atol=16 * eps * np.abs(want[finite]).max()
        )


def test_power_the_k_by_k_check_sees_a_plain_difference_of_sums():
    # `log(Σ_j w_j - w_k)` without the arg max special case cancels catastrophically.
    x = np.array([[0.0, -20.0, -20.0]])
    lse, _ = _brute_force(x)
    total = np.float32(np.sum(np.exp(x), 1, keepdims=True))
    with np.errstate(divide="ignore"):
        naive = np.log(total - np.exp(x).astype(np.float32))
    assert not np.allclose(naive, lse, rtol=16 * np.finfo(np.float32).eps)
    got = leave_one_out_logsumexp(tf.constant(x, tf.float32))
    np.testing.assert_allclose(got, lse, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["vimco", "jvi", "jvi_dreg"])
def test_leave_one_out_estimators_run_at_k_300000(name):
    # A [K, K] float32 tensor here would be 360 GB; linear memory is 300000 floats a row.
    # float64: JVI's K·L_K - (K-1)/K·Σ_i L^{(-i)} cancels K-fold, which float32
    # rounding (~1e-7 · K = 0.03) would swamp, with or without the [K, K] tensor.
    k = 300_000
    loc = tf.Variable(0.3, dtype=tf.float64)
    q = tfd.Normal(loc, tf.constant(1.0, tf.float64))
    estimator = tge.estimators.get(name)
    with tf.GradientTape() as tape:
        loss = estimator.loss(
            lambda z: tfd.Normal(tf.constant(0.0, tf.float64), 1.0).log_prob(z),
            q,
            importance_sample_size=k,
            seed=1,
        )
    grad = tape.gradient(loss, loc)
    # The bound of a Normal(0.3, 1) proposal for a normalised target: log p(x) = 0, up to
    # Monte Carlo error (var(w) = e^{0.09} - 1 ≈ 0.09, so the error is ~ 0.3/√K ≈ 5e-4).
    assert abs(float(loss)) < 5e-3
    assert np.isfinite(float(grad))


def test_leave_one_out_mean_can_skip_zero_weights():
    # skip_neg_inf=True: the mean over the other *finite* entries (a score-function
    # baseline); over no entry it is -inf. NaN is never skipped.
    x = np.array([[1.0, -np.inf, 3.0, 5.0], [-np.inf, 2.0, -np.inf, -np.inf]])
    x = np.stack([x, x + 1e4], axis=-1)  # a large common offset, precision kept
    want = np.empty_like(x)
    for row, col, b in np.ndindex(*x.shape):
        others = np.delete(x[row, :, b], col)
        others = others[np.isfinite(others)]
        want[row, col, b] = others.mean() if others.size else -np.inf
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        got = leave_one_out_mean(variable, skip_neg_inf=True)
    np.testing.assert_array_equal(got.numpy(), want)
    assert np.all(np.isfinite(tape.gradient(got, variable)))  # no 0/0 from the empty means
    # The default keeps -inf in (a geometric mean with a zero weight is zero): the same
    # input gives -inf wherever a -inf is among the others.
    assert np.sum(np.isinf(leave_one_out_mean(tf.constant(x)).numpy())) > np.sum(np.isinf(want))
    nan = tf.constant([[np.nan, 1.0, -np.inf]])
    assert np.all(np.isnan(leave_one_out_mean(nan, skip_neg_inf=True).numpy()[0, 1:]))
