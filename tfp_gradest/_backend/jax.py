"""JAX backend: `jax.random` draws keyed by the `SeedGenerator` state (a raw Threefry key).

On JAX, `keras.random.normal` is this same `jax.random.normal` call, and XLA compiles
JAX's Threefry to fast code. Measured for 313,600 float32 Normals under `jax.jit` on a
loaded 2-core CPU, timed in alternation (`KERAS_BACKEND=jax python
benchmarks/noise_path.py`), medians of two runs: `normal` here 15.4 and 14.0 ms,
`keras.random.normal` 8.7 and 9.4 ms, the same call with a plain Threefry key 8.7 and
16.0 ms (the three are one computation: their spread is the machine's load), while an
`unsafe_rbg` key (XLA's RngBitGenerator) took 40 and 40 ms. So the default key is kept.
"""

import jax
import jax.numpy as jnp

__all__ = [
    "STATELESS_TRAINING",
    "per_example",
    "in_traced_function",
    "native_variables",
    "normal",
    "random_signs",
]


# Keras's JAX trainer passes variables into the jitted step as state (`layer.variables`);
# any other variable read there is a constant frozen at tracing time.
STATELESS_TRAINING = True


def _key(seed):
    # `SeedGenerator.next()` is a uint32 2-vector on JAX: a raw Threefry key.
    return jnp.asarray(seed, jnp.uint32)


def normal(shape, seed, dtype):
    return jax.random.normal(_key(seed), tuple(shape), dtype=dtype)


def random_signs(shape, seed, dtype):
    return jax.random.rademacher(_key(seed), tuple(shape), dtype=dtype)


def per_example(draw):
    # Arrays are global under `keras.distribution` (XLA shards one draw of the global
    # batch's shape), so per-example rows are already independent across devices.
    return draw


def in_traced_function():
    # Under `jax.jit` (and `grad`, `vmap`, ...) every new array is a tracer.
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def native_variables():
    return ()
