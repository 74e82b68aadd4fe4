"""TensorFlow: `tf.function`, `tf.GradientTape`, and streaming moments in variables."""

import numpy as np
import tensorflow as tf

from tfp_gradest.diagnostics.moments import compiled_function, running_moments_update

__all__ = ["StreamingMoments", "compiled", "value_and_grad"]


def compiled(fn, jit_compile):
    """One graph (XLA-compiled if `jit_compile`); no autograph: the loops are `keras.ops`.

    Each monitor's function counts as its own for TensorFlow's retracing warning
    (`diagnostics.moments.compiled_function`), so several monitors are not reported.
    """
    return compiled_function(fn, jit_compile)


def value_and_grad(fn, variables, values):
    """`((value, aux), gradients)` of `fn(None) -> (scalar, aux)` w.r.t. `variables`.

    TensorFlow differentiates the variables themselves (`values` is not used): `fn`
    reads them, so a `tf.custom_gradient` inside the loss (e.g. the TFP-based
    estimators' one-pass surrogates, whose backward pass reaches the decoder's
    weights only as variables it sees accessed) gets their gradients. Unconnected
    variables get zeros.
    """
    del values
    variables = list(variables)
    with tf.GradientTape() as tape:
        value, aux = fn(None)
    grads = tape.gradient(value, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return (value, aux), grads


class StreamingMoments:
    """Welford moments of the optimizer's gradients in (non-trainable) TF variables.

    The train step is a `tf.function`, so state lives in variables it updates. Under
    a distribution strategy the variables are created in its scope and updated once
    (`ONLY_FIRST_REPLICA`) with the gradient summed over replicas: Keras scales each
    replica's loss by 1/replicas, so the sum is the global-batch gradient.
    """

    def __init__(self, model):
        variables = list(model.trainable_variables)
        with model.distribute_strategy.scope():
            first = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self._count = tf.Variable(0.0, **first)
            self._mean = [tf.Variable(tf.zeros(v.shape, v.dtype), **first) for v in variables]
            self._m2 = [tf.Variable(tf.zeros(v.shape, v.dtype), **first) for v in variables]

    def update(self, grads, indices):
        """Adds one gradient (`grads[j]` of trainable variable `indices[j]`; None: skipped)."""
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            summed = iter(context.all_reduce("sum", [g for g in grads if g is not None]))
            grads = [None if g is None else next(summed) for g in grads]
        count = self._count.assign_add(1.0)
        for g, i in zip(grads, indices):
            if g is None or i is None:
                continue
            g = tf.convert_to_tensor(g)
            mean, m2 = running_moments_update(
                tf.cast(count, g.dtype), self._mean[i].read_value(), self._m2[i].read_value(), g
            )
            self._mean[i].assign(mean)
            self._m2[i].assign(m2)

    def read_and_reset(self):
        """`(count, means, m2s)` as numpy since the last reset; then starts again."""
        result = (
            float(self._count.numpy()),
            [m.numpy() for m in self._mean],
            [s.numpy() for s in self._m2],
        )
        self._count.assign(0.0)
        for variable in self._mean + self._m2:
            variable.assign(np.zeros(variable.shape, variable.dtype.as_numpy_dtype))
        return result
