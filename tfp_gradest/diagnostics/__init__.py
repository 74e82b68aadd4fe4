"""Gradient diagnostics: moments, SNR, bias tests and estimator comparisons for any loss.

One module per job: `statistics` (moments, SNR, bias z-scores) and `timing` (alternated
timing) need only numpy, so `tge.callbacks` uses them on any Keras backend;
`model_gradients` draws the gradients of a Keras model on TensorFlow or JAX; `draws`
draws those of a loss that takes a seed (a TFP estimator's), importing TensorFlow and
TFP when first called; the estimator comparisons (`compare_estimators`, ...) need
TensorFlow Probability and are imported on first use (PEP 562 module `__getattr__`).
"""

import importlib

from tfp_gradest.diagnostics.draws import draw_seeds, gradient_draws, gradient_sampler
from tfp_gradest.diagnostics.model_gradients import (
    model_gradient_draws,
    model_gradient_function,
    model_gradient_variance,
)
from tfp_gradest.diagnostics.statistics import (
    GradientMoments,
    bias_z_scores,
    gradient_moments,
    merge_moments,
    signal_to_noise_ratio,
)
from tfp_gradest.diagnostics.timing import (
    StepTime,
    interleaved_step_seconds,
    interleaved_times,
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
    "interleaved_times",
    "median_step_seconds",
    "merge_moments",
    "model_gradient_draws",
    "model_gradient_function",
    "model_gradient_variance",
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
