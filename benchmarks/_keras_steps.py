"""Compiled SGD loops and gradient variances for Keras 3 models on either backend.

`benchmarks/layers.py --backend tensorflow|jax` times and measures the same models on
both Keras backends through these two functions. On TensorFlow they are the loops the
benchmarks always used (`_common.compiled_training_loop`,
`tfp_gradest.diagnostics.layer_gradients.gradient_variance`); on JAX they are the same
computations written as pure functions (`jax.lax.fori_loop` / `jax.lax.scan` under
`jax.jit`), the model's variables mapped to traced values with `keras.StatelessScope`
and its non-trainable state (the layers' `SeedGenerator`s) carried through the loop, so
every step and every draw gets fresh noise.
"""

import keras
import numpy as np


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

    step = jax.value_and_grad(_pure(loss_fn, variables, state_variables), has_aux=True)

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


def gradient_variance(loss_fn, variable, state_variables, num_draws):
    """Mean over elements of the variance (ddof 0) of `∂ loss_fn() / ∂ variable` over
    `num_draws` draws, each with fresh noise from the SeedGenerators in `state_variables`."""
    if keras.backend.backend() == "tensorflow":
        from tfp_gradest.diagnostics.layer_gradients import gradient_variance as tf_variance

        return tf_variance(loss_fn, variable, num_draws)

    import jax
    import jax.numpy as jnp

    pure = _pure(loss_fn, [variable], state_variables)
    grad = jax.grad(lambda value, state: pure([value], state), has_aux=True)

    @jax.jit
    def variance(value, state):
        def body(state, _):
            g, state = grad(value, state)
            return state, g

        _, draws = jax.lax.scan(body, state, None, length=num_draws)
        return jnp.mean(jnp.var(draws, axis=0))

    return float(variance(variable.value, [v.value for v in state_variables]))


def _pure(loss_fn, variables, state_variables):
    """`(values, state) -> (loss, new_state)`: `loss_fn()` with `variables` and
    `state_variables` (disjoint lists) read from the arguments (JAX)."""

    def pure(values, state):
        mapping = list(zip(variables, values)) + list(zip(state_variables, state))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            loss = loss_fn()
        return loss, [scope.get_current_value(v) for v in state_variables]

    return pure


def to_tensor(array, dtype=None):
    """A numpy array as a tensor of the current backend."""
    return keras.ops.convert_to_tensor(np.asarray(array), dtype=dtype)
