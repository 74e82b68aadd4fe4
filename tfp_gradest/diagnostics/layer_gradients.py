"""Deprecated: `gradient_variance` is `tge.diagnostics.model_gradient_variance` (TensorFlow and
JAX; on JAX pass `state_variables=model.non_trainable_variables`; the variance is now the
unbiased one, `ddof=1`). The old name still works for one release and warns
(`DeprecationWarning`) with the name to write instead."""

from tfp_gradest.diagnostics._deprecated import module_getattr

__all__ = []  # nothing new is public here

__getattr__ = module_getattr(
    __name__,
    {"gradient_variance": ("tfp_gradest.diagnostics.model_gradients", "model_gradient_variance")},
)
