"""TensorFlow backend: stateless Philox draws, `tf.function`, `tf.GradientTape`.

Noise: `tf.random.stateless_*` with `alg="philox"`. Why not `keras.random.normal`: on
TensorFlow it calls `tf.random.stateless_normal` with the default algorithm, which XLA
compiles to a much slower Threefry on CPU (`KERAS_BACKEND=tensorflow python
benchmarks/noise_path.py` times the two on your machine).

Gradients: a `tf.GradientTape` around the loss, which reads the variables themselves,
so assignments inside it (a `SeedGenerator` advancing) are real and a compiled loop of
draws carries them without help.
"""

import functools

import numpy as np
import tensorflow as tf

from tfp_gradest._backend import BACKEND_MODULE_NAMES

__all__ = list(BACKEND_MODULE_NAMES)  # the contract every backend module fulfils


# TensorFlow's compiled functions read variables when they run.
STATELESS_TRAINING = False


def _seed(seed):
    # The SeedGenerator's state is int64 on TensorFlow; the stateless ops want int32 under XLA.
    return tf.cast(seed, tf.int32)


def normal(shape, seed, dtype):
    return tf.random.stateless_normal(shape, _seed(seed), dtype=dtype, alg="philox")


def random_signs(shape, seed, dtype):
    bits = tf.random.stateless_uniform(
        shape, _seed(seed), minval=0, maxval=2, dtype=tf.int32, alg="philox"
    )
    return tf.cast(2 * bits - 1, dtype)


def _replica():
    """`(replica id, replicas in sync)` of the running `tf.distribute` replica; `(0, 1)` outside
    a strategy or in its cross-replica context (one copy of the computation)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def per_example(draw):
    """`draw` for noise with one row per example: a replica's rows of the global batch's draw.

    Under a strategy every replica reads the same mirrored seed, and its batch is a
    consecutive slice of the global batch; so replica `r` of `R` draws the noise of the
    whole global batch, `[R * B_local, ...]`, and keeps rows `r * B_local ...`. Replicas
    then get independent rows, and the run equals one device with the global batch
    (without this every replica's rows got the *same* noise). The cost is `R` times the
    draws, which are cheap next to the layer's products.
    """

    def draw_rows(shape, seed, dtype):
        replica, replicas = _replica()
        if isinstance(replicas, int) and replicas == 1:
            return draw(shape, seed, dtype)
        rows, rest = shape[0], list(shape[1:])
        every_replica = draw([replicas * rows] + rest, seed, dtype)
        return tf.gather(tf.reshape(every_replica, [replicas, rows] + rest), replica)

    return draw_rows


def in_traced_function():
    return not tf.executing_eagerly()


def native_variables():
    return (tf.Variable,)


def compiled(fn, jit_compile):
    """`tf.function(fn)` (XLA if `jit_compile`, no autograph), counted as its own function.

    TensorFlow's frequent-retracing warning counts traces per *code object*, so the
    closures that several samplers or monitors build from one `def` (each traced once,
    by design: one per estimator, K or model) are counted together and reported as
    retracing. Wrapped in a `functools.partial`, which has no code object, each compiled
    function is counted on its own, and a real retrace of one of them still warns.
    """
    return tf.function(functools.partial(fn), jit_compile=bool(jit_compile), autograph=False)


def value_and_grad(fn, variables, values):
    """`((value, aux), gradients)` of `fn(None) -> (scalar, aux)` w.r.t. `variables`.

    TensorFlow differentiates the variables themselves (`values` is not used): `fn`
    reads them, so a `tf.custom_gradient` inside the loss (e.g. the TFP-based
    estimators' one-pass surrogates, whose backward pass reaches the decoder's
    weights only as variables it sees accessed) gets their gradients. Plain tensors
    and `tf.Variable`s in `variables` are watched explicitly (a non-trainable one too).
    Unconnected variables get zeros.
    """
    del values
    variables = list(variables)
    with tf.GradientTape() as tape:
        tape.watch([v for v in variables if isinstance(v, tf.Tensor | tf.Variable)])
        value, aux = fn(None)
    grads = tape.gradient(value, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return (value, aux), grads


def gradient_step(loss_fn, variables, state_variables, jit_compile):
    """`() -> (loss, gradients)` of `loss_fn()`; its assignments (`state_variables`) are real."""
    del state_variables

    def step():
        (loss, _), grads = value_and_grad(lambda _: (loss_fn(), ()), variables, None)
        return loss, grads

    return compiled(step, True) if jit_compile else step


def gradient_draws(loss_fn, variables, state_variables, num_draws, jit_compile):
    """`num_draws` gradients of `loss_fn()` stacked per variable, in one compiled `tf.map_fn`.

    Each call of `loss_fn` advances the `SeedGenerator`s it uses (real assignments), so
    every draw has fresh noise and the generators end where the last draw left them.
    """
    del state_variables
    signature = [tf.TensorSpec(v.shape, v.dtype) for v in variables]
    step = gradient_step(loss_fn, variables, (), jit_compile=False)

    def draws():
        return tf.map_fn(lambda _: step()[1], tf.range(num_draws), fn_output_signature=signature)

    return compiled(draws, jit_compile)()


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
        from tfp_gradest.diagnostics.statistics import running_moments_update

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
