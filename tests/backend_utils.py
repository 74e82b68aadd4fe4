"""Backend-neutral test helpers: gradients and repeated gradient draws on TensorFlow and JAX.

A test that should also run under ``KERAS_BACKEND=jax`` is marked ``@pytest.mark.backends``
(or a whole module: ``pytestmark = pytest.mark.backends``) and uses only ``keras.ops``,
numpy and these helpers, never ``tf.`` APIs. ``KERAS_BACKEND=jax python -m pytest -q`` runs
exactly the marked tests (tests/conftest.py deselects the rest, and does not even import
test modules that never mention the marker); the plain run still runs everything on
TensorFlow. Under JAX, two host devices are available (conftest sets
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX is imported).

Usage::

    import keras
    from keras import ops
    from tests import backend_utils as bu

    layer = tge.layers.DenseReparameterization(3, seed=1)
    x = np.ones((4, 5), "float32")
    # One draw: numpy gradients w.r.t. layer.trainable_variables. The layer's own losses
    # (the KL term, from `add_loss`) are added to `loss_fn(outputs)` unless
    # add_layer_losses=False.
    grads = bu.gradients(layer, lambda y: ops.sum(ops.sin(y)), x, jit_compile=True)
    # n draws, fresh noise each (SeedGenerator states advance on both backends):
    # one array of shape [n, *variable.shape] per trainable variable.
    draws = bu.draw_gradients(200, layer, lambda y: ops.sum(y**2), x, jit_compile=True)

    # A closure over Keras variables (e.g. the R2-G2 primitive): list every variable whose
    # value the closure changes (SeedGenerator states: `seed_generator.state`) as
    # state_variables, or JAX would replay the same noise (a ValueError says so).
    loss, grads = bu.value_and_grad(lambda: loss_of(w), [w], state_variables=[sg.state])
    step = bu.gradient_fn(lambda: loss_of(w), [w], state_variables=[sg.state],
                          jit_compile=True)  # compile once, call many times
    loss, grads = step()

    bu.backend()                      # "tensorflow" or "jax"
    bu.skip_unless("tensorflow", "TFP's own layers")  # inside a marked test

How it works: the library's `tge.diagnostics.model_gradient_function` (one draw per call)
and `model_gradient_draws` (many draws in one compiled loop): on TensorFlow a
`tf.GradientTape` (inside `tf.function(jit_compile=True)` when asked); on JAX
`jax.value_and_grad` of a pure function that runs the loss inside a `keras.StatelessScope`
mapping each variable to a traced value, returns the updated state and assigns it back
after the call (`jax.jit` when asked). This module only converts to numpy and wraps
layers. Gradients of variables the loss does not depend on are zeros on both backends,
so results compare one to one. float64 needs ``jax_enable_x64`` on JAX; without it the
``dtype`` fixture skips float64 there.
"""

import contextlib

import keras
import numpy as np
import pytest

import tfp_gradest as tge

__all__ = [
    "NoisyScale",
    "backend",
    "draw_gradients",
    "global_dtype_policy",
    "gradient_fn",
    "gradients",
    "layer_gradient_fn",
    "skip_unless",
    "to_numpy",
    "value_and_grad",
]


class NoisyScale(keras.layers.Layer):
    """y = x * (w + eps), eps ~ N(0, 1) per call (its `SeedGenerator`); adds the loss
    sum(w**2). The smallest layer with fresh noise per call and a known gradient."""

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x, training=False):
        self.add_loss(keras.ops.sum(self.w**2))
        noise = keras.random.normal(keras.ops.shape(self.w), seed=self.seed_generator)
        return x * (self.w + noise)


def backend():
    """The Keras backend's name: "tensorflow" or "jax" (or "torch", "numpy")."""
    return keras.backend.backend()


@contextlib.contextmanager
def global_dtype_policy(name):
    """Keras's global dtype policy `name` inside the block, "float32" again after it."""
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy("float32")


def skip_unless(name, what):
    """Skips the running test unless the backend is `name`; `what` says what needs it."""
    if backend() != name:
        pytest.skip(f"{what} needs the {name} backend; this run is on {backend()}")


def to_numpy(x):
    """A backend tensor (or nested list of them) as numpy."""
    if isinstance(x, list | tuple):
        return type(x)(to_numpy(v) for v in x)
    return keras.ops.convert_to_numpy(x)


def gradient_fn(loss_fn, variables, state_variables=(), jit_compile=False):
    """A callable `() -> (loss, grads)` with numpy results; build once, call many times.

    `tge.diagnostics.model_gradient_function` (arguments as there: list every variable
    `loss_fn` assigns, e.g. `seed_generator.state`, as `state_variables`, or JAX refuses
    it with a `ValueError`), its results as numpy.
    """
    step = tge.diagnostics.model_gradient_function(loss_fn, variables, state_variables, jit_compile)

    def call():
        loss, grads = step()
        return float(to_numpy(loss)), [np.asarray(to_numpy(g)) for g in grads]

    return call


def value_and_grad(loss_fn, variables, state_variables=(), jit_compile=False):
    """One call of `gradient_fn(...)`: `(loss, [numpy gradient per variable])`."""
    return gradient_fn(loss_fn, variables, state_variables, jit_compile)()


def _layer_loss(model_or_layer, loss_fn, inputs, training, add_layer_losses):
    """`loss_fn(model_or_layer(*inputs))` (+ its layers' losses), building it if needed."""
    inputs = [keras.ops.convert_to_tensor(x) for x in inputs]
    if not model_or_layer.built:
        model_or_layer(*inputs, training=training)

    def loss():
        value = loss_fn(model_or_layer(*inputs, training=training))
        if add_layer_losses and model_or_layer.losses:
            value = value + keras.ops.sum(keras.ops.stack(model_or_layer.losses))
        return value

    return loss


def layer_gradient_fn(
    model_or_layer, loss_fn, *inputs, training=True, add_layer_losses=True, jit_compile=False
):
    """`gradient_fn` for `loss_fn(model_or_layer(*inputs, training=...))`.

    Differentiates w.r.t. `model_or_layer.trainable_variables` and carries its
    `non_trainable_variables` (which include the SeedGenerator states), so repeated calls
    give fresh noise. With `add_layer_losses`, the sum of `model_or_layer.losses` (e.g.
    the KL term) is added to the loss. An unbuilt layer is built by one eager call first
    (one noise draw).
    """
    return gradient_fn(
        _layer_loss(model_or_layer, loss_fn, inputs, training, add_layer_losses),
        model_or_layer.trainable_variables,
        state_variables=model_or_layer.non_trainable_variables,
        jit_compile=jit_compile,
    )


def gradients(model_or_layer, loss_fn, *inputs, **kwargs):
    """One draw of the gradients of `layer_gradient_fn`: a list of numpy arrays, one per
    trainable variable (keyword arguments as `layer_gradient_fn`)."""
    return layer_gradient_fn(model_or_layer, loss_fn, *inputs, **kwargs)()[1]


def draw_gradients(
    num_draws,
    model_or_layer,
    loss_fn,
    *inputs,
    training=True,
    add_layer_losses=True,
    jit_compile=False,
):
    """`num_draws` independent gradient draws (fresh noise each), in one compiled loop
    (`tge.diagnostics.model_gradient_draws`).

    Returns a list with one numpy array of shape `[num_draws, *variable.shape]` per
    trainable variable (keyword arguments as `layer_gradient_fn`).
    """
    return tge.diagnostics.model_gradient_draws(
        _layer_loss(model_or_layer, loss_fn, inputs, training, add_layer_losses),
        model_or_layer.trainable_variables,
        num_draws,
        state_variables=model_or_layer.non_trainable_variables,
        jit_compile=jit_compile,
    )
