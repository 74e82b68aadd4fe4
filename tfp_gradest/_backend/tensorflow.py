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


def in_traced_function():
    return not tf.executing_eagerly()


def native_variables():
    return (tf.Variable,)
