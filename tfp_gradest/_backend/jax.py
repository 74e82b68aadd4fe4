"""JAX backend: `jax.random` draws keyed by the `SeedGenerator` state, `jax.jit`, pure gradients.

Noise: the `SeedGenerator` state is a raw Threefry key, as for `keras.random.normal`,
which is this same `jax.random.normal` call (`KERAS_BACKEND=jax python
benchmarks/noise_path.py` times it against the alternatives on your machine, e.g. an
`unsafe_rbg` key, XLA's RngBitGenerator).

Gradients: JAX differentiates pure functions, so a loss of Keras variables runs inside
a `keras.StatelessScope` (`tfp_gradest._backend.stateless`) that maps the variables to
traced values and returns the new values of the state it assigns (a `SeedGenerator`
advancing); the loops carry that state and write it back after.
"""

import threading

import jax
import jax.numpy as jnp
import numpy as np

from tfp_gradest._backend import BACKEND_MODULE_NAMES

__all__ = list(BACKEND_MODULE_NAMES)  # the contract every backend module fulfils


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


def compiled(fn, jit_compile):
    """`jax.jit(fn)`. JAX has no uncompiled graph mode, so `jit_compile` is not consulted."""
    del jit_compile
    return jax.jit(fn)


def value_and_grad(fn, variables, values):
    """`((value, aux), gradients)` of `fn(values) -> (scalar, aux)` w.r.t. `values`, the
    traced values of `variables` (a pure function: JAX cannot differentiate a variable).
    Unused values get zeros."""
    del variables
    return jax.value_and_grad(fn, has_aux=True)(list(values))


def gradient_step(loss_fn, variables, state_variables, jit_compile):
    """`() -> (loss, gradients)` of `loss_fn()`, writing the new state back after each call."""
    from tfp_gradest._backend import stateless

    pure = stateless(loss_fn, variables, state_variables)
    step = jax.value_and_grad(pure, has_aux=True)
    if jit_compile:
        step = jax.jit(step)

    def call():
        (loss, state), grads = step(_values(variables), _values(state_variables))
        _assign(state_variables, state)
        return loss, grads

    return call


def gradient_draws(loss_fn, variables, state_variables, num_draws, jit_compile):
    """`num_draws` gradients of `loss_fn()` stacked per variable, in one `jax.lax.scan` that
    carries the state (fresh noise per draw); the final state is written back."""
    from tfp_gradest._backend import stateless

    grad = jax.grad(stateless(loss_fn, variables, state_variables), has_aux=True)

    def draws(values, state):
        def body(state, _):
            grads, state = grad(values, state)
            return state, grads

        return jax.lax.scan(body, state, None, length=num_draws)

    if jit_compile:
        draws = jax.jit(draws)
    state, grads = draws(_values(variables), _values(state_variables))
    _assign(state_variables, state)
    return grads


def _values(variables):
    return [v.value for v in variables]


def _assign(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)


class StreamingMoments:
    """Welford moments of the optimizer's gradients, accumulated on the host in float64.

    Keras's JAX train step is a pure function whose state is exactly the model's,
    the optimizer's and the metrics' variables (`Optimizer.stateless_apply` keeps
    only the optimizer's own variables), so a callback's variables updated inside it
    would be dropped. Instead each step hands its gradients to the host with
    `jax.debug.callback` (a device-to-host copy of one gradient per step, which is
    the price of this mode on JAX); `read_and_reset` waits for pending callbacks
    with `jax.effects_barrier()`. Welford's update is order-independent up to
    rounding, so the callbacks need no ordering.
    """

    def __init__(self, model):
        self._shapes = [tuple(v.shape) for v in model.trainable_variables]
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self._count = 0
        self._mean = [np.zeros(s) for s in self._shapes]
        self._m2 = [np.zeros(s) for s in self._shapes]

    def update(self, grads, indices):
        """Adds one gradient (`grads[j]` of trainable variable `indices[j]`; None: skipped)."""
        from tfp_gradest.diagnostics.statistics import running_moments_update

        pairs = [(g, i) for g, i in zip(grads, indices) if g is not None and i is not None]
        targets = tuple(i for _, i in pairs)

        def on_host(*values):
            with self._lock:
                self._count += 1
                for value, i in zip(values, targets):
                    self._mean[i], self._m2[i] = running_moments_update(
                        float(self._count), self._mean[i], self._m2[i], np.asarray(value, float)
                    )

        jax.debug.callback(on_host, *[g for g, _ in pairs])

    def read_and_reset(self):
        """`(count, means, m2s)` as numpy since the last reset; then starts again."""
        jax.effects_barrier()
        with self._lock:
            result = (float(self._count), self._mean, self._m2)
            self._reset()
        return result
