"""`tge.diagnostics`: the one SNR definition, dtype-aware bias z-scores, merged moments,
alternated timing, the deprecated module paths."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tfp_gradest as tge
from tfp_gradest.diagnostics import draws, statistics


def test_bias_z_tolerance_follows_the_dtype_of_the_draws():
    # All draws equal: the standard error is 0 and only rounding separates mean and reference.
    # float32: a difference of one ulp at 1e3 (6e-5) is rounding, not bias (absolute 1e-12
    # called it inf) ...
    draws32 = np.full((5, 1), 1000.0, np.float32)
    reference = np.float64(np.float32(1000.0)) + 6.1e-5
    assert tge.diagnostics.bias_z_scores(draws32, [reference])[0] == 0.0
    # ... and the power check: ten ulps apart is a bias, flagged as infinite.
    assert np.isinf(tge.diagnostics.bias_z_scores(draws32, [1000.0 + 6.1e-4])[0])
    # float64 with tiny gradients: a real difference of 1e-20 (relative 100%) is a bias
    # (absolute 1e-12 called it 0), while equal values are not.
    draws64 = np.full((5, 1), 1e-20)
    assert np.isinf(tge.diagnostics.bias_z_scores(draws64, [0.0])[0])
    assert tge.diagnostics.bias_z_scores(draws64, [1e-20])[0] == 0.0


def test_bias_z_adds_the_reference_standard_error_in_quadrature():
    draws = np.array([[0.0], [2.0], [0.0], [2.0]])  # mean 1, standard error sqrt(4/3 / 4)
    se = np.sqrt(4 / 3 / 4)
    z_exact = tge.diagnostics.bias_z_scores(draws, [0.0])
    z_mc = tge.diagnostics.bias_z_scores(draws, [0.0], reference_standard_error=[se])
    np.testing.assert_allclose(z_exact, [1 / se])
    np.testing.assert_allclose(z_mc, [1 / (np.sqrt(2) * se)])


def test_snr_is_the_mean_of_debiased_elementwise_ratios():
    rng = np.random.default_rng(0)
    # Element 0: mean 3, sd 1 (SNR 3); element 1: pure noise (SNR 0); element 2: constant.
    draws = np.stack(
        [3 + rng.normal(size=20000), rng.normal(size=20000), np.full(20000, 5.0)], axis=1
    )
    snr = tge.diagnostics.signal_to_noise_ratio(tge.diagnostics.gradient_moments(draws))
    # The constant element is left out; the noise element scores ~0 (debiased), so the
    # mean is ~3/2. Standard error of each estimate ~1/sqrt(20000): 0.05 is > 5 of them.
    assert snr == pytest.approx(1.5, abs=0.05)
    # Pure noise: the squared sample mean's var/N bias, removed, no longer lifts the SNR to
    # ~sqrt(2/(pi N)) (0.081 at N = 100, measured over 2,000 elements); debiased it is 0.036.
    # Bound 0.6x (the ratio's standard error over 2,000 elements is ~0.02); the naive
    # estimate, the power check, fails it by construction (ratio 1).
    noise = tge.diagnostics.gradient_moments(rng.normal(size=(100, 2000)))
    naive = np.mean(np.abs(noise.mean) / np.sqrt(noise.variance))
    assert tge.diagnostics.signal_to_noise_ratio(noise) < 0.6 * naive
    assert naive == pytest.approx(np.sqrt(2 / np.pi / 100), rel=0.1)


def test_snr_takes_the_signal_from_another_estimator():
    noisy = tge.diagnostics.gradient_moments(np.array([[1.0], [-1.0], [1.0], [-1.0]]))
    signal = tge.diagnostics.gradient_moments(np.array([[2.0], [2.0], [2.0], [2.0]]))
    assert tge.diagnostics.signal_to_noise_ratio(noisy) == 0.0
    assert tge.diagnostics.signal_to_noise_ratio(noisy, signal=signal) == pytest.approx(
        2 / np.sqrt(4 / 3)
    )


def test_draw_seeds_match_tfp_split_seed():
    import tensorflow as tf
    import tensorflow_probability as tfp

    from tfp_gradest._util.seeds import sanitize_seed

    expected = tf.stack(tfp.random.split_seed(sanitize_seed(3), 7))
    np.testing.assert_array_equal(draws.draw_seeds(3, 7), expected)


def test_interleaved_timing_returns_ordered_quartiles_per_step():
    calls = []
    times = tge.diagnostics.interleaved_step_seconds(
        [lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, min_repeat_seconds=0
    )
    assert len(times) == 2 and all(t.low <= t.median <= t.high for t in times)
    # Alternation: after the two warm-up and two sizing calls, a and b take turns.
    assert calls[4:] == ["a"] * 10 + ["b"] * 10 + ["a"] * 10 + ["b"] * 10 + ["a"] * 10 + ["b"] * 10


def _sum_of_squares_moments(batches):
    """The variance as `reference_gradient` computed it before: E[x²] - E[x]² from running
    sums (the power check's deliberately wrong estimator)."""
    n = sum(len(b) for b in batches)
    mean = sum(b.sum(0) for b in batches) / n
    squares = sum(np.square(b).sum(0) for b in batches) / n
    return np.maximum(squares - mean**2, 0.0) * n / (n - 1)


def test_merged_moments_are_those_of_all_draws_even_far_from_zero():
    rng = np.random.default_rng(0)
    # Gradients of magnitude 1e8 that vary by ~1: a sum of squares keeps ~16 digits of
    # 1e16, so it loses the variance entirely; merging per-batch moments keeps it.
    batches = [1e8 + rng.normal(size=(50, 3)) for _ in range(4)]
    batches_moments = [statistics.gradient_moments(b) for b in batches]
    merged = batches_moments[0]
    for m in batches_moments[1:]:
        merged = tge.diagnostics.merge_moments(merged, m)
    exact = statistics.gradient_moments(np.concatenate(batches))
    assert merged.num_draws == 200
    np.testing.assert_allclose(merged.mean, exact.mean, rtol=1e-15)
    np.testing.assert_allclose(merged.variance, exact.variance, rtol=1e-6)
    np.testing.assert_allclose(merged.standard_error, exact.standard_error, rtol=1e-6)
    # Power check: the old running sum of squares is off by more than the variance itself.
    naive = _sum_of_squares_moments(batches)
    assert np.all(np.abs(naive - exact.variance) > 0.5 * exact.variance)


def test_running_update_is_merging_one_draw_at_a_time():
    rng = np.random.default_rng(1)
    values = 1e8 + rng.normal(size=(30, 2))
    mean, m2 = np.zeros(2), np.zeros(2)
    for count, value in enumerate(values, start=1):
        mean, m2 = statistics.running_moments_update(float(count), mean, m2, value)
    running = statistics.moments_from_running(mean, m2, len(values))
    exact = statistics.gradient_moments(values)
    np.testing.assert_allclose(running.mean, exact.mean, rtol=1e-15)
    np.testing.assert_allclose(running.variance, exact.variance, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Degrees of freedom")  # numpy: one draw's variance is NaN
def test_merging_a_single_draw_adds_it_to_the_moments():
    # gradient_moments of one draw has a NaN (undefined) variance; its sum of squared
    # deviations is still 0, so merging it (a batch of one) must not spread the NaN.
    draws = np.random.default_rng(2).normal(size=(5, 3))
    merged = statistics.gradient_moments(draws[:1])
    for draw in draws[1:]:
        merged = tge.diagnostics.merge_moments(merged, statistics.gradient_moments(draw[None]))
    exact = statistics.gradient_moments(draws)
    assert merged.num_draws == 5
    np.testing.assert_allclose(merged.mean, exact.mean, rtol=1e-14)
    np.testing.assert_allclose(merged.variance, exact.variance, rtol=1e-12)


def test_merging_with_no_draws_is_the_identity():
    m = statistics.gradient_moments(np.array([[1.0], [3.0]]))
    empty = statistics.GradientMoments(np.zeros(1), np.zeros(1), np.zeros(1), 0)
    assert tge.diagnostics.merge_moments(empty, m) is m
    assert tge.diagnostics.merge_moments(m, empty) is m


def test_interleaved_times_are_per_step_and_round():
    calls = []
    times = tge.diagnostics.interleaved_times(
        [lambda: calls.append("a"), lambda: calls.append("b")],
        repeats=4,
        calls_per_repeat=1,
        min_repeat_seconds=0,
    )
    assert times.shape == (2, 4) and np.all(times >= 0)
    assert calls[4:] == ["a", "b"] * 4  # one call each per round, in turn


_WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # importing TensorFlow now fails
import jax.numpy as jnp
import numpy as np
import tfp_gradest as tge

(time,) = tge.diagnostics.interleaved_step_seconds([lambda: jnp.ones(3) * 2], repeats=2)
moments = tge.diagnostics.gradient_moments(np.array([[1.0], [3.0]]))
print(time.median > 0, float(moments.variance[0]))
"""


def test_statistics_and_timing_need_no_tensorflow():
    # The package docstring's claim: on JAX, timing and the statistics run without
    # TensorFlow (the timer used to import it to wait for a result).
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "2.0"]


@pytest.mark.parametrize(
    "module,name,new",
    [
        ("moments", "gradient_moments", statistics.gradient_moments),
        ("moments", "running_moments_update", statistics.running_moments_update),
        ("moments", "gradient_sampler", draws.gradient_sampler),
        ("layer_gradients", "gradient_variance", tge.diagnostics.model_gradient_variance),
    ],
)
def test_old_module_paths_warn_and_name_what_to_write(module, name, new):
    import importlib

    old = importlib.import_module(f"tfp_gradest.diagnostics.{module}")
    with pytest.warns(DeprecationWarning, match=r"write `tfp_gradest\.diagnostics\.\w+\.\w+`"):
        assert getattr(old, name) is new
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018
    # The new paths do not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tge.diagnostics.gradient_moments is statistics.gradient_moments


def test_monte_carlo_reference_is_the_moments_of_all_its_draws():
    # Drawn in four batches and merged: the mean and standard error of the 200 draws at once.
    problem = tge.problems.get("toy_gaussian", dim=3, dtype="float64")
    name = problem.reference_estimator_for(4)
    sampler = draws.gradient_sampler(problem.loss_fn(name, 1, 4), problem.variables_for(name))
    reference = tge.diagnostics.reference_gradient(problem, 4, 200, seed=5, sampler=(sampler, 50))
    all_at_once = [statistics.gradient_moments(d) for d in sampler(draws.draw_seeds(5, 200))]
    for got, error, want in zip(reference.gradients, reference.standard_errors, all_at_once):
        np.testing.assert_allclose(got, want.mean, rtol=1e-12)
        np.testing.assert_allclose(error, want.standard_error, rtol=1e-9)
    assert "mean of 200" in reference.description
