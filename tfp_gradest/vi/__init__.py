"""Variational inference with a choice of gradient estimator: `tfp.vi` drop-ins.

* `fit_surrogate_posterior`: TensorFlow, stateful (a surrogate holding variables, a
  Keras optimizer), as `tfp.vi.fit_surrogate_posterior`.
* `fit_surrogate_posterior_stateless`: JAX (a surrogate built from a parameter pytree,
  an optax optimizer), as `tfp.substrates.jax.vi.fit_surrogate_posterior_stateless`.
* `monte_carlo_variational_loss`: either, chosen by the surrogate's type.

Each is imported on first use, so that on JAX neither TensorFlow nor the TensorFlow
entry point is ever imported; without TensorFlow installed, `fit_surrogate_posterior`
raises an `ImportError` saying what to install.
"""

import importlib

__all__ = [
    "fit_surrogate_posterior",
    "fit_surrogate_posterior_stateless",
    "monte_carlo_variational_loss",
]

# Public name -> the submodule defining it.
_LAZY = {
    "fit_surrogate_posterior": "optimization",
    "fit_surrogate_posterior_stateless": "stateless",
    "monte_carlo_variational_loss": "losses",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from tfp_gradest import _missing_dependency_error

    try:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    except ModuleNotFoundError as error:
        raise _missing_dependency_error(f"tfp_gradest.vi.{name}", error) from error
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
