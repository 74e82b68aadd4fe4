"""Layer gradient estimators: one small object per estimator, registered by name.

A layer's `gradient_estimator=` takes what `get` takes, as `keras.initializers.get`
does: a registered name (`"r2g2"`; `names()` lists them,
`tfp_gradest.layers.GRADIENT_ESTIMATORS` those of the package), a class, an instance
holding its options (`R2G2(cg_iterations=8)`), or a config dict as `serialize` writes it.
"""

from tfp_gradest.layers.estimators.auto import Auto
from tfp_gradest.layers.estimators.base import (
    LayerEstimator,
    NoiseSource,
    Posterior,
    get,
    names,
    register,
    serialize,
)
from tfp_gradest.layers.estimators.flipout import Flipout
from tfp_gradest.layers.estimators.local_reparameterization import LocalReparameterization
from tfp_gradest.layers.estimators.r2g2 import R2G2
from tfp_gradest.layers.estimators.reparameterization import (
    WeightReparameterization,
    deprecated_alias,
)

__all__ = [
    "Auto",
    "Flipout",
    "LayerEstimator",
    "LocalReparameterization",
    "NoiseSource",
    "Posterior",
    "R2G2",
    "WeightReparameterization",
    "get",
    "names",
    "register",
    "serialize",
]


def __getattr__(name):
    # `Reparameterization`: 0.2's name of `WeightReparameterization`, deprecated.
    return deprecated_alias(__name__, name)
