"""R2-G2: Rao-Blackwellised reparameterisation gradients for Gaussian weights behind linear maps.

Written against `keras.ops` (backward passes by `keras.ops.custom_gradient`), so it runs on
the TensorFlow and JAX backends and imports neither TensorFlow nor JAX itself. The solves
are float64: on JAX that needs `jax.config.update("jax_enable_x64", True)` (without it they
run in float32, with a warning; see `conditioning`).
"""

from tfp_gradest.r2g2.conditioning import (
    conditional_noise,
    fit_to_memory,
    scale_gradient,
    solve_is_skipped,
)
from tfp_gradest.r2g2.conjugate_gradient import CGResult, conjugate_gradient
from tfp_gradest.r2g2.gaussian_linear import gaussian_linear
from tfp_gradest.r2g2.latent_linear import gaussian_latent_dense
from tfp_gradest.r2g2.linear_maps import ConvolutionMap, DenseMap

__all__ = [
    "CGResult",
    "ConvolutionMap",
    "DenseMap",
    "conditional_noise",
    "fit_to_memory",
    "conjugate_gradient",
    "gaussian_latent_dense",
    "gaussian_linear",
    "scale_gradient",
    "solve_is_skipped",
]
