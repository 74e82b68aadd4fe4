"""Keras 3 models for amortised variational inference, trained with `model.fit`."""

from tfp_gradest.models.hierarchical_vae import HierarchicalVAE
from tfp_gradest.models.variational_autoencoder import VariationalAutoencoder

__all__ = ["HierarchicalVAE", "VariationalAutoencoder"]
