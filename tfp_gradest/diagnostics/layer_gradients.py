"""Gradient variance of one variable under a stochastic loss, as used to compare layer
estimators."""

import tensorflow as tf

from tfp_gradest.diagnostics.moments import compiled_function

__all__ = ["gradient_variance"]


def gradient_variance(loss_fn, variable, num_draws=300):
    """Mean over elements of the variance of `∂ loss_fn() / ∂ variable` across `num_draws` draws.

    `loss_fn` takes no argument and draws its own noise (e.g. a Keras model
    called with `training=True`, whose layers advance their `SeedGenerator`s),
    so every call is an independent draw. The draws run in one XLA-compiled
    `tf.map_fn`.

    Args:
      loss_fn: callable `() -> scalar`.
      variable: a `tf.Variable` or `keras.Variable` the loss depends on.
      num_draws: Python `int >= 2`.

    Returns:
      Python `float`.
    """
    if not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"`num_draws` must be an int >= 2. Received: num_draws={num_draws!r}")
    target = variable.value if hasattr(variable, "value") else variable

    def draws():
        def one(_):
            with tf.GradientTape() as tape:
                value = loss_fn()
            return tape.gradient(value, target)

        return tf.map_fn(one, tf.range(num_draws), fn_output_signature=tf.TensorSpec(target.shape))

    # One compiled function per call, counted as its own (not as a retrace of the last).
    gradients = compiled_function(draws, jit_compile=True)()
    return float(tf.reduce_mean(tf.math.reduce_variance(gradients, axis=0)))
