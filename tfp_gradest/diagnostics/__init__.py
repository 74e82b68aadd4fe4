"""Gradient diagnostics: moments, SNR, bias tests and estimator comparisons for any loss."""

from tfp_gradest.diagnostics.compare import (
    Comparison,
    EstimatorReport,
    ReferenceGradient,
    compare_estimators,
    reference_gradient,
)
from tfp_gradest.diagnostics.moments import (
    GradientMoments,
    bias_z_scores,
    gradient_draws,
    gradient_moments,
    signal_to_noise_ratio,
)
from tfp_gradest.diagnostics.timing import (
    StepTime,
    interleaved_step_seconds,
    median_step_seconds,
)

__all__ = [
    "Comparison",
    "EstimatorReport",
    "GradientMoments",
    "ReferenceGradient",
    "StepTime",
    "bias_z_scores",
    "compare_estimators",
    "gradient_draws",
    "gradient_moments",
    "interleaved_step_seconds",
    "median_step_seconds",
    "reference_gradient",
    "signal_to_noise_ratio",
]
