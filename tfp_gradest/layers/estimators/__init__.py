"""Layer gradient estimators: one small object per estimator, registered by name.

`tfp_gradest.layers.GRADIENT_ESTIMATORS` lists the names; a layer's
`gradient_estimator=` takes one of them.
"""

from tfp_gradest.layers.estimators.auto import Auto
from tfp_gradest.layers.estimators.base import LayerEstimator, Posterior, get, names, register
from tfp_gradest.layers.estimators.flipout import Flipout
from tfp_gradest.layers.estimators.local_reparameterization import LocalReparameterization
from tfp_gradest.layers.estimators.r2g2 import R2G2
from tfp_gradest.layers.estimators.reparameterization import Reparameterization

__all__ = [
    "Auto",
    "Flipout",
    "LayerEstimator",
    "LocalReparameterization",
    "Posterior",
    "R2G2",
    "Reparameterization",
    "get",
    "names",
    "register",
]
