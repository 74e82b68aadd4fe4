"""Gradient estimators as value-preserving surrogate losses.

est = tge.estimators.get("stl")
loss = est.loss(target_log_prob_fn, surrogate_posterior, sample_size=8, seed=0)
"""

from tfp_gradest.estimators.base import GradientEstimator, get, names, register, surrogate_objective
from tfp_gradest.estimators.elbo import STL, Reparameterization
from tfp_gradest.estimators.score_function import ScoreFunction

__all__ = [
    "GradientEstimator",
    "Reparameterization",
    "STL",
    "ScoreFunction",
    "get",
    "names",
    "register",
    "surrogate_objective",
]
