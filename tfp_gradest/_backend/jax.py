"""JAX backend: `jax.random` draws keyed by the `SeedGenerator` state (a raw Threefry key).

On JAX, `keras.random.normal` is this same `jax.random.normal` call, and XLA compiles
JAX's Threefry to fast code: measured for 313,600 float32 Normals under `jax.jit` on a
loaded 2-core CPU, timed in alternation (`KERAS_BACKEND=jax python
benchmarks/noise_path.py`): `jax.random.normal` with the raw key 8.7 ms [8.0, 11.1]
(median [IQR]), `keras.random.normal` 8.7 ms [7.7, 16.5], while an `unsafe_rbg` key
(XLA's RngBitGenerator) is slower, 40 ms [36, 44]. So the default key is kept.
"""

import jax
import jax.numpy as jnp

__all__ = [
    "STATELESS_TRAINING",
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


def in_traced_function():
    # Under `jax.jit` (and `grad`, `vmap`, ...) every new array is a tracer.
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def native_variables():
    return ()
