"""Gradient re-use for minibatched VI: I-SAG (importance-sampled stochastic average gradients).

`fit` is the entry point: a target split into per-batch terms,
`batch_log_prob_fn(theta, batch_index)`, and a Gaussian surrogate; `ISAG` holds the
method's options and memory.
"""

from tfp_gradest.reuse.importance import WEIGHTINGS, linearized_objective, reuse_weights
from tfp_gradest.reuse.isag import ISAG
from tfp_gradest.reuse.optimization import fit

__all__ = ["ISAG", "WEIGHTINGS", "fit", "linearized_objective", "reuse_weights"]
