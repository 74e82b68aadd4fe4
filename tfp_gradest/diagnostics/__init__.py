"""Gradient diagnostics: moments, SNR, bias tests and estimator comparisons for any loss.

The moments, SNR and timing need only numpy, so `tge.callbacks` uses them on any Keras
backend; the estimator comparisons (`compare_estimators`, ...) need TensorFlow
Probability and are imported on first use (PEP 562 module `__getattr__`).
"""

import importlib

from tfp_gradest.diagnostics.moments import (
    GradientMoments,
    bias_z_scores,
    draw_seeds,
    gradient_draws,
    gradient_moments,
    gradient_sampler,
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
    "draw_seeds",
    "gradient_draws",
    "gradient_moments",
    "gradient_sampler",
    "interleaved_step_seconds",
    "median_step_seconds",
    "reference_gradient",
    "signal_to_noise_ratio",
]

# Names of the TFP-based comparison module, imported when first asked for.
_LAZY = {
    name: "tfp_gradest.diagnostics.compare"
    for name in (
        "Comparison",
        "EstimatorReport",
        "ReferenceGradient",
        "compare_estimators",
        "reference_gradient",
    )
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
