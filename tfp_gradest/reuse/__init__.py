"""Gradient re-use for minibatched VI: I-SAG (importance-sampled stochastic average gradients)."""

from tfp_gradest.reuse.importance import WEIGHTINGS, linearized_objective, reuse_weights
from tfp_gradest.reuse.isag import ISAG

__all__ = ["ISAG", "WEIGHTINGS", "linearized_objective", "reuse_weights"]
