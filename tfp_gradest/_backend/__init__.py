"""The only backend-specific code of the Keras 3 parts (`layers`, `r2g2`, `callbacks`).

Everything else is written against `keras.ops` / `keras.random`. What Keras has no
fast op for lives here, one module per backend (`tensorflow.py`, `jax.py`), chosen
by `keras.backend.backend()` when first used:

* `normal(shape, seed, dtype)`: standard Normal draws;
* `random_signs(shape, seed, dtype)`: Rademacher `±1` draws;
* `per_example_normal(shape, seed, dtype)`, `per_example_random_signs(...)`: the same for
  noise with one row per example (`shape[0]` is the batch): under a TensorFlow
  strategy each replica gets its own rows of the global batch's draw (so replicas do
  not repeat each other's noise, and the run equals one device); elsewhere as above;
* `in_traced_function()`: whether the code runs while a compiled function is traced;
* `native_variables()`: the backend's own variable types other than `keras.Variable`
  (a `tf.Variable` on TensorFlow), which the layers accept as live settings;
* `current().STATELESS_TRAINING`: whether compiled training steps see only the variables
  passed in as state (JAX), rather than reading any variable when they run (TensorFlow);

where `seed` is what `keras.random.SeedGenerator.next()` returns (a 2-vector of
the backend's seed dtype). Both are stateless, so they trace under XLA, and use
each backend's fastest generator there (measured by `benchmarks/noise_path.py`;
numbers in the backend modules): on TensorFlow, stateless Philox, since
`keras.random.normal` (TensorFlow's Threefry under XLA on CPU) is 28x-500x
slower; on JAX, `jax.random` with the seed as a Threefry key, which is what
`keras.random.normal` does there too.

`check_supported(owner)` raises a clear error on a backend without such a module
(PyTorch, NumPy, OpenVINO), naming the backend and the supported ones;
`require_tensorflow_backend(entry_point_name)` does the same for the TensorFlow-only
entry points (`tge.models`, `tge.vi`).
"""

import importlib

import keras

__all__ = [
    "SUPPORTED_BACKENDS",
    "check_supported",
    "current",
    "in_traced_function",
    "native_variables",
    "normal",
    "per_example_normal",
    "per_example_random_signs",
    "random_signs",
    "require_tensorflow_backend",
]

SUPPORTED_BACKENDS = ("tensorflow", "jax")

_MODULES = {}


def check_supported(owner="tfp_gradest"):
    """Raises `RuntimeError` unless the Keras backend is one of `SUPPORTED_BACKENDS`."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"{owner} runs on the Keras backends {SUPPORTED_BACKENDS}; the current Keras backend "
            f"is {backend!r}. Set the environment variable KERAS_BACKEND=jax or "
            "KERAS_BACKEND=tensorflow before importing keras. "
            f"Received: keras.backend.backend()={backend!r}"
        )
    return backend


def require_tensorflow_backend(entry_point_name):
    """Raises `RuntimeError` unless the Keras backend is TensorFlow, naming `entry_point_name`.

    For the entry points written with TensorFlow / TFP rather than `keras.ops`
    (`tge.models`, `tge.vi`): on another backend they would construct and then fail
    deep inside with a misleading error, so they call this first.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{entry_point_name} runs only on the Keras backend 'tensorflow' (it is written "
            f"with TensorFlow Probability); the current Keras backend is {backend!r}. Set the "
            "environment variable KERAS_BACKEND=tensorflow before importing keras, or use "
            "the backend-independent layers (`tge.layers`). "
            f"Received: keras.backend.backend()={backend!r}"
        )
    return backend


def current():
    """The module implementing this file's functions for the current Keras backend."""
    backend = check_supported()
    module = _MODULES.get(backend)
    if module is None:
        module = importlib.import_module(f"{__name__}.{backend}")
        _MODULES[backend] = module
    return module


def normal(shape, seed, dtype):
    """Standard Normal draws of `shape` and `dtype` from a `SeedGenerator.next()` seed."""
    return current().normal(shape, seed, dtype)


def random_signs(shape, seed, dtype):
    """`±1` with probability 1/2 each, of `shape` and `dtype`, from a `SeedGenerator.next()`
    seed."""
    return current().random_signs(shape, seed, dtype)


def per_example_normal(shape, seed, dtype):
    """`normal` for noise with one row per example (`shape[0]` is the batch); see above."""
    module = current()
    return module.per_example(module.normal)(shape, seed, dtype)


def per_example_random_signs(shape, seed, dtype):
    """`random_signs` for signs with one row per example (`shape[0]` is the batch)."""
    module = current()
    return module.per_example(module.random_signs)(shape, seed, dtype)


def in_traced_function():
    """True while a compiled function (`tf.function`, `jax.jit`, ...) is being traced."""
    return current().in_traced_function()


def native_variables():
    """A tuple of the backend's own variable classes besides `keras.Variable` (maybe empty)."""
    return current().native_variables()
