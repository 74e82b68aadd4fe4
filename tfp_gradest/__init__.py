"""tfp_gradest: lower-variance gradient estimators for TensorFlow Probability.

import tfp_gradest as tge
tge.vi.fit_surrogate_posterior(..., gradient_estimator="stl")
"""

from tfp_gradest import (
    callbacks,
    datasets,
    diagnostics,
    estimators,
    layers,
    models,
    problems,
    r2g2,
    reuse,
    vi,
)

__version__ = "0.1.0"
__all__ = [
    "callbacks",
    "datasets",
    "diagnostics",
    "estimators",
    "layers",
    "models",
    "problems",
    "r2g2",
    "reuse",
    "vi",
]
