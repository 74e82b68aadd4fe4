"""Variational inference with a choice of gradient estimator: `tfp.vi` drop-ins."""

from tfp_gradest.vi.losses import monte_carlo_variational_loss
from tfp_gradest.vi.optimization import fit_surrogate_posterior

__all__ = ["fit_surrogate_posterior", "monte_carlo_variational_loss"]
