"""The TFP the models compute with: TFP's substrate for the active Keras backend.

A model's networks run on the Keras backend, so their outputs are that backend's arrays
(TensorFlow Tensors, or JAX arrays traced inside Keras's stateless train step), and the
distributions built from them must be of the matching TFP substrate
(`tensorflow_probability` on TensorFlow, `tensorflow_probability.substrates.jax` on
JAX: `tfp_gradest._substrate`). Imported when first used, so importing `tge.models`
imports neither.
"""

import keras

from tfp_gradest import _backend

__all__ = ["check_surrogate", "substrate", "tfd"]

_SUBSTRATE_PACKAGES = {
    "tensorflow": "`tensorflow_probability`",
    "jax": "`tensorflow_probability.substrates.jax`",
}


def substrate(owner):
    """The `tfp_gradest._substrate` module for the active Keras backend; a `RuntimeError`
    naming `owner` on a backend without one (PyTorch, NumPy, OpenVINO)."""
    return _get(_backend.check_supported(owner))


def tfd(owner):
    """`tfp.distributions` of the active Keras backend's substrate (see `substrate`)."""
    return substrate(owner).tfp.distributions


def check_surrogate(surrogate_posterior, owner):
    """Raises a `TypeError` unless `surrogate_posterior` is a distribution of the active
    Keras backend's substrate.

    E.g. a subclass whose `surrogate_posterior` builds a `tensorflow_probability`
    distribution on the JAX backend would otherwise fail deep inside the estimator
    with a misleading error. Checked in Python while tracing: no cost per step.
    """
    expected, found = substrate(owner), _of(surrogate_posterior)
    if found is expected:
        return
    backend = keras.backend.backend()
    raise TypeError(
        f"`{owner}.surrogate_posterior(x)` must return a distribution of TFP's substrate for "
        f"the Keras backend {backend!r} ({_SUBSTRATE_PACKAGES[backend]}, built from the "
        "encoder's outputs), so that the estimator and Keras's train step differentiate "
        f"the same arrays. It returned one of TFP's {found.NAME!r} substrate. Build it "
        f"with {_SUBSTRATE_PACKAGES[backend]}'s distributions, or set the environment "
        "variable KERAS_BACKEND to the backend its substrate belongs to before importing "
        f"keras. Received: surrogate_posterior={surrogate_posterior!r}"
    )


# Looked up once per backend: traced code (autograph above all) then never calls importlib.
_MODULES = {}


def _get(name):
    module = _MODULES.get(name)
    if module is None:
        from tfp_gradest import _substrate

        module = _MODULES[name] = _substrate.get(name)
    return module


def _of(distribution):
    from tfp_gradest import _substrate

    return _get(_substrate.name_of(distribution))
