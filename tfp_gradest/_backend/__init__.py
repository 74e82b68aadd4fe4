"""The only backend-specific code of the package's Keras 3 parts, behind one dispatch.

Everything else is written against `keras.ops` / `keras.random`. What Keras has no
fast op or public API for lives here, one module per backend (`tensorflow.py`,
`jax.py`), chosen by `keras.backend.backend()` when first used (`current()`), so
importing this package imports neither TensorFlow nor JAX.

Noise, for `layers` and `r2g2`:

* `normal(shape, seed, dtype)`: standard Normal draws;
* `random_signs(shape, seed, dtype)`: Rademacher `±1` draws;
* `per_example_normal(shape, seed, dtype)`, `per_example_random_signs(...)`: the same for
  noise with one row per example (`shape[0]` is the batch): under a TensorFlow
  strategy each replica gets its own rows of the global batch's draw (so replicas do
  not repeat each other's noise, and the run equals one device); elsewhere as above;

where `seed` is what `keras.random.SeedGenerator.next()` returns (a 2-vector of the
backend's seed dtype). Both are stateless, so they trace under XLA, and use each
backend's fastest generator there (`benchmarks/noise_path.py` times them): on
TensorFlow, stateless Philox, since `keras.random.normal` (TensorFlow's Threefry under
XLA on CPU) is much slower; on JAX, `jax.random` with the seed as a Threefry key,
which is what `keras.random.normal` does there too.

Gradients, for `callbacks` and `tge.diagnostics`' model gradients (each backend module):

* `compiled(fn, jit_compile)`: `fn` as one compiled program (`tf.function`, `jax.jit`);
* `value_and_grad(fn, variables, values)`: `((value, aux), gradients)` of `fn -> (scalar,
  aux)` with respect to `variables` (whose current values are `values`), zeros where
  `fn` does not depend on one. JAX calls `fn(values)` on traced values; TensorFlow
  calls `fn(None)`, which reads the variables themselves, under a `tf.GradientTape`;
* `gradient_step(loss_fn, variables, state_variables, jit_compile)` and
  `gradient_draws(loss_fn, variables, state_variables, num_draws, jit_compile)`: one
  gradient of a zero-argument loss of Keras variables, or `num_draws` of them in one
  compiled loop, the noise state (`state_variables`) carried between draws (JAX, via
  `stateless` below) or assigned as the loss runs (TensorFlow);
* `StreamingMoments(model)`: running moments of the gradients handed to the optimizer
  (`update(grads, indices)` inside the train step, `read_and_reset()` after it), kept
  where that backend's train step can keep state.

Here: `stateless(loss_fn, variables, state_variables)`, the pure function of a loss of
Keras variables (any backend); `in_traced_function()`; `native_variables()`, the
backend's own variable types besides `keras.Variable` (a `tf.Variable` on TensorFlow),
which the layers accept as live settings; `current().STATELESS_TRAINING`, whether
compiled training steps see only the variables passed in as state (JAX) rather than
reading any variable when they run (TensorFlow).

`check_supported(owner)` raises a clear error on a backend without such a module
(PyTorch, NumPy, OpenVINO), naming the backend and the supported ones;
`require_tensorflow_backend(entry_point_name)` does the same for the TensorFlow-only
entry points (`tge.vi.fit_surrogate_posterior`, `tge.reuse`).
"""

import importlib

import keras

__all__ = [
    "BACKEND_MODULE_NAMES",
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
    "stateless",
]

SUPPORTED_BACKENDS = ("tensorflow", "jax")

# What each backend module (`tensorflow.py`, `jax.py`) defines: the list above.
BACKEND_MODULE_NAMES = (
    "STATELESS_TRAINING",
    "StreamingMoments",
    "compiled",
    "gradient_draws",
    "gradient_step",
    "in_traced_function",
    "native_variables",
    "normal",
    "per_example",
    "random_signs",
    "value_and_grad",
)

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
    (`tge.vi.fit_surrogate_posterior`, `tge.reuse`): on another backend they would
    construct and then fail deep inside with a misleading error, so they call this first.
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


def stateless(loss_fn, variables, state_variables):
    """The pure function `(values, state_values) -> (loss, new_state_values)` of `loss_fn()`.

    `loss_fn` reads Keras variables; inside a `keras.StatelessScope`, `variables` read
    `values` (traced values, to differentiate; `values=None` leaves them as they are,
    for TensorFlow, which differentiates the variables themselves) and
    `state_variables` read `state_values`. What `loss_fn` assigns to the state (a
    `SeedGenerator` advancing, a moving statistic) is returned, not assigned, so a
    compiled loop can carry it. A loss that assigns any other variable is refused with
    a `ValueError`: its assignment would be lost, and e.g. every draw would replay the
    same noise.
    """
    variables, state_variables = list(variables), list(state_variables)
    listed = {id(v) for v in variables + state_variables}

    def pure(values, state_values):
        weights = [] if values is None else list(zip(variables, values))
        mapping = weights + list(zip(state_variables, state_values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            loss = loss_fn()
        # The scope's `state_mapping` is keyed by `id(variable)`.
        unlisted = [key for key in scope.state_mapping if key not in listed]
        if unlisted:
            raise ValueError(
                f"`loss_fn` assigned {len(unlisted)} variable(s) not passed in "
                "`state_variables` (e.g. a SeedGenerator's `state`): pass them (for a model, "
                "`state_variables=model.non_trainable_variables`) so that their new values "
                "are kept between draws."
            )
        return loss, [scope.get_current_value(v) for v in state_variables]

    return pure
