"""Keras callbacks: gradient variance while `model.fit` runs; KL annealing."""

from tfp_gradest.callbacks.gradient_variance_monitor import GradientVarianceMonitor
from tfp_gradest.callbacks.kl_annealing import KLAnnealing
from tfp_gradest.callbacks.plotting import plot_gradient_variance

__all__ = ["GradientVarianceMonitor", "KLAnnealing", "plot_gradient_variance"]
