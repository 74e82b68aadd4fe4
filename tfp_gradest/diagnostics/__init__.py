"""Gradient diagnostics: moments, SNR, bias tests and estimator comparisons for any loss."""

from tfp_gradest.diagnostics.compare import EstimatorReport, compare_estimators
from tfp_gradest.diagnostics.moments import (
    GradientMoments,
    bias_z_scores,
    gradient_draws,
    gradient_moments,
)
from tfp_gradest.diagnostics.timing import median_step_seconds

__all__ = [
    "EstimatorReport",
    "GradientMoments",
    "bias_z_scores",
    "compare_estimators",
    "gradient_draws",
    "gradient_moments",
    "median_step_seconds",
]
