"""TensorFlow backend: stateless Philox draws (`tf.random.stateless_*` with `alg="philox"`).

Why not `keras.random.normal`: on TensorFlow it calls `tf.random.stateless_normal` with
the default algorithm, which XLA compiles to a slow Threefry on CPU. Measured for
313,600 float32 Normals under `tf.function(jit_compile=True)` on a loaded 2-core CPU,
timed in alternation (`KERAS_BACKEND=tensorflow python benchmarks/noise_path.py`):
`normal` here 41 ms [28, 52] (median [IQR]), `keras.random.normal` 1005 ms [852, 1170],
a median ratio of 28x. (An earlier measurement on a quiet machine: 0.3 ms vs 150 ms.)
"""

import tensorflow as tf

__all__ = [
    "STATELESS_TRAINING",
    "per_example",
    "in_traced_function",
    "native_variables",
    "normal",
    "random_signs",
]


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
