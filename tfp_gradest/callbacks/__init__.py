"""Keras callbacks: gradient variance while `model.fit` runs."""

from tfp_gradest.callbacks.gradient_variance_monitor import GradientVarianceMonitor
from tfp_gradest.callbacks.plotting import plot_gradient_variance

__all__ = ["GradientVarianceMonitor", "plot_gradient_variance"]
