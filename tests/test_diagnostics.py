"""`tge.diagnostics`: the one SNR definition, dtype-aware bias z-scores, alternated timing."""

import numpy as np
import pytest

import tfp_gradest as tge
from tfp_gradest.diagnostics import moments


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
    np.testing.assert_array_equal(moments.draw_seeds(3, 7), expected)


def test_interleaved_timing_returns_ordered_quartiles_per_step():
    calls = []
    times = tge.diagnostics.interleaved_step_seconds(
        [lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, min_repeat_seconds=0
    )
    assert len(times) == 2 and all(t.low <= t.median <= t.high for t in times)
    # Alternation: after the two warm-up and two sizing calls, a and b take turns.
    assert calls[4:] == ["a"] * 10 + ["b"] * 10 + ["a"] * 10 + ["b"] * 10 + ["a"] * 10 + ["b"] * 10
