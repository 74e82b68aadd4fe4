"""Compiled SGD loops for Keras 3 models on either backend.

`benchmarks/layers.py --backend tensorflow|jax` times the same models on both Keras
backends through `training_loop` (their gradient variances come from
`tge.diagnostics.model_gradient_variance`). On TensorFlow it is the loop the benchmarks
always used (`_common.compiled_training_loop`); on JAX the same computation written as a
pure function (`jax.lax.fori_loop` under `jax.jit`) of the model's variables
(`tfp_gradest._backend.stateless`), its non-trainable state (the layers'
`SeedGenerator`s) carried through the loop, so every step gets fresh noise.
"""

import keras
import numpy as np

from tfp_gradest import _backend


def training_loop(loss_fn, variables, state_variables, num_steps, learning_rate=1e-4):
    """A zero-argument callable running `num_steps` compiled SGD steps on `loss_fn()`
    and waiting for the result; compiled at its first call."""
    if keras.backend.backend() == "tensorflow":
        import _common
        import tensorflow as tf

        loop = _common.compiled_training_loop(
            lambda seed=None: loss_fn(), [v.value for v in variables], num_steps, learning_rate
        )
        seed = tf.constant([0, 1], tf.int32)
        return lambda: loop(seed).numpy()

    import jax

    step = jax.value_and_grad(_backend.stateless(loss_fn, variables, state_variables), has_aux=True)

    @jax.jit
    def loop(values, state):
        def body(_, carry):
            values, state = carry
            (_, state), grads = step(values, state)
            return [v - learning_rate * g for v, g in zip(values, grads)], state

        return jax.lax.fori_loop(0, num_steps, body, (values, state))

    # Every call starts from the variables' current values (like the TensorFlow loop
    # continuing from where it stopped, at lr 1e-4 this changes nothing measurable).
    return lambda: jax.block_until_ready(
        loop([v.value for v in variables], [v.value for v in state_variables])
    )


def to_tensor(array, dtype=None):
    """A numpy array as a tensor of the current backend."""
    return keras.ops.convert_to_tensor(np.asarray(array), dtype=dtype)
