"""The monitor's only backend-specific code: compiling, differentiating, and watching the
optimizer's gradients, one small module per Keras backend (`tensorflow.py`, `jax.py`).

Each module provides

* `compiled(fn, jit_compile)`: `fn` as one compiled program (`tf.function`, `jax.jit`);
* `value_and_grad(fn, variables, values)`: `((value, aux), gradients)` of `fn -> (scalar,
  aux)` with respect to `variables` (whose current values are `values`), zeros where
  `fn` does not depend on one. JAX calls `fn(values)` on traced values; TensorFlow
  calls `fn(None)`, which reads the variables themselves, under a `tf.GradientTape`;
* `StreamingMoments(model)`: running moments of the gradients handed to the optimizer
  (`update(grads, indices)` inside the train step, `read_and_reset()` after it), kept
  where that backend's train step can keep state.

The module is chosen by `keras.backend.backend()` when first used, so importing
`tfp_gradest.callbacks` imports neither TensorFlow nor JAX.
"""

import importlib

import keras

__all__ = ["SUPPORTED_BACKENDS", "check_supported", "current"]

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def check_supported():
    """The Keras backend's name; `RuntimeError` naming it unless it is supported."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"GradientVarianceMonitor runs on the Keras backends {SUPPORTED_BACKENDS}. Set "
            "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before importing keras. "
            f"Received: keras.backend.backend()={backend!r}"
        )
    return backend


def current():
    """The module for the current Keras backend (imported on first use)."""
    return importlib.import_module(f"{__name__}.{check_supported()}")
