"""JAX: `jax.jit`, `jax.value_and_grad`, and streaming moments kept on the host."""

import threading

import jax
import numpy as np

from tfp_gradest.diagnostics.moments import running_moments_update

__all__ = ["StreamingMoments", "compiled", "value_and_grad"]


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
