"""Deprecated: the numpy statistics moved to `statistics.py`, the TensorFlow draw loops to
`draws.py` (each also in `tge.diagnostics`). Every name here still works for one release
and warns (`DeprecationWarning`) with the name to write instead."""

from tfp_gradest.diagnostics._deprecated import module_getattr

__all__ = []  # nothing new is public here

_STATISTICS = "tfp_gradest.diagnostics.statistics"
_DRAWS = "tfp_gradest.diagnostics.draws"

__getattr__ = module_getattr(
    __name__,
    {
        **{
            name: (_STATISTICS, name)
            for name in (
                "GradientMoments",
                "bias_z_scores",
                "gradient_moments",
                "moments_from_running",
                "running_moments_update",
                "signal_to_noise_ratio",
            )
        },
        **{
            name: (_DRAWS, name)
            for name in ("compiled_function", "draw_seeds", "gradient_draws", "gradient_sampler")
        },
    },
)
