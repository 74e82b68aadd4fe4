"""The backend-specific pieces of `HierarchicalVAE.log_likelihood_bound`: the seed, the
noise, the dtype of the streaming sum, and the compiled function.

Sample `k` of level `l` is `normal([batch, d_l], fold_in(split(seed, L)[l], k))`, so a
sample does not depend on how the `K` samples are grouped: the chunked bound uses exactly
the samples of the unchunked one. TensorFlow draws with stateless Philox (the layers'
generator, `tfp_gradest._backend.tensorflow`; its XLA kernel turns the same Philox bits
into other Normal numbers, so XLA and non-XLA runs differ); JAX with `jax.random` on a raw
Threefry key (`uint32[2]`), as `keras.random` does there. The two backends draw different
numbers from the same seed.
"""

import functools

import keras
import numpy as np

__all__ = ["compiled", "noise", "seed", "wide_dtype"]

# Importance samples drawn one by one (unrolled) up to this many; beyond, in a loop.
MAX_UNROLLED_DRAWS = 8


def _jax():
    return keras.backend.backend() == "jax"


def seed(value):
    """A stateless seed from a Python/NumPy `int` (`[0, seed]`) or a `[2]` integer array (the
    backend's own: an int32/int64 pair on TensorFlow, a raw `uint32[2]` key on JAX)."""
    if isinstance(value, (int, np.integer)):
        if _jax():
            import jax

            return jax.random.PRNGKey(int(value))  # [0, seed] below 2**32
        import tensorflow as tf

        return tf.constant([0, int(value)], tf.int64)
    if _jax():
        import jax.numpy as jnp

        return jnp.asarray(value, jnp.uint32)
    import tensorflow as tf

    return tf.convert_to_tensor(value)


def wide_dtype():
    """The dtype the chunks' log-mean-exp is combined in: float64, or float32 on JAX without
    `jax_enable_x64` (JAX has no float64 then)."""
    if _jax():
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def noise(seed, first, count, batch, dims, dtype):
    """The standard Normal draws of importance samples `first, ..., first + count - 1`: one
    `[count * batch, d]` array per entry `d` of `dims`, sample-major (module docstring)."""
    draw = _jax_noise if _jax() else _tensorflow_noise
    return draw(seed, first, count, batch, dims, dtype)


def _tensorflow_noise(seed, first, count, batch, dims, dtype):
    import tensorflow as tf

    level_seeds = tf.random.experimental.stateless_split(seed, len(dims), alg="philox")

    def draw(k):
        return [
            tf.random.stateless_normal(
                [batch, dim],
                tf.random.experimental.stateless_fold_in(level_seeds[level], k, alg="philox"),
                dtype=dtype,
                alg="philox",
            )
            for level, dim in enumerate(dims)
        ]

    if count <= MAX_UNROLLED_DRAWS:
        draws = [draw(first + i) for i in range(count)]
        return [tf.concat([d[level] for d in draws], 0) for level in range(len(dims))]
    static_batch = batch if isinstance(batch, int) else None
    stacked = tf.map_fn(
        draw,
        first + tf.range(count),
        fn_output_signature=[tf.TensorSpec([static_batch, d], dtype) for d in dims],
    )
    rows = -1 if static_batch is None else count * int(static_batch)
    return [tf.reshape(s, [rows, d]) for s, d in zip(stacked, dims)]


def _jax_noise(seed, first, count, batch, dims, dtype):
    import jax
    import jax.numpy as jnp

    level_keys = jax.random.split(jnp.asarray(seed, jnp.uint32), len(dims))

    def draw(k):
        return [
            jax.random.normal(jax.random.fold_in(level_keys[level], k), (batch, dim), dtype)
            for level, dim in enumerate(dims)
        ]

    stacked = jax.lax.map(draw, first + jnp.arange(count))
    return [jnp.reshape(s, (count * batch, d)) for s, d in zip(stacked, dims)]


def compiled(bound, variables):
    """`bound(x, seed)` as one compiled function that reads `variables` when called.

    TensorFlow: a `tf.function` (it reads the variables when it runs). JAX: a `jax.jit` of
    a function of the variables' values, run in a `keras.StatelessScope` mapping each
    variable to its value, so the weights are arguments, not constants frozen at the
    first call (a jitted closure over Keras variables would keep the weights of the
    first call after the model trains on)."""
    if not _jax():
        import tensorflow as tf

        return tf.function(functools.partial(bound))
    import jax

    variables = list(variables)

    def pure(values, x, seed):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return bound(x, seed=seed)

    jitted = jax.jit(pure)
    return lambda x, seed: jitted([v.value for v in variables], x, seed)
