"""Bayesian Keras 3 layers whose backward pass can be Rao-Blackwellised (R2-G2).

Written in `keras.ops`, so they run on the TensorFlow and JAX backends (other backends
are refused at construction); the noise comes from `tfp_gradest._backend`. Importing
them needs Keras and a backend only, not TensorFlow.
"""

from tfp_gradest.layers.base import GRADIENT_ESTIMATORS, BayesianLayer
from tfp_gradest.layers.convolutional import (
    BayesianConv,
    Conv1DReparameterization,
    Conv2DReparameterization,
    Conv3DReparameterization,
)
from tfp_gradest.layers.dense import DenseReparameterization
from tfp_gradest.layers.mlp import bayesian_mlp

__all__ = [
    "GRADIENT_ESTIMATORS",
    "BayesianConv",
    "BayesianLayer",
    "Conv1DReparameterization",
    "Conv2DReparameterization",
    "Conv3DReparameterization",
    "DenseReparameterization",
    "bayesian_mlp",
]
