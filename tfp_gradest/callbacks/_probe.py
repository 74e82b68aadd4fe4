"""`GradientVarianceMonitor`'s probe mode: the moments of `num_draws` gradient draws on a
fixed batch at the current weights, in one compiled loop that assigns nothing."""

import keras
import numpy as np

from tfp_gradest import _backend
from tfp_gradest._util import keras_private
from tfp_gradest.diagnostics.statistics import moments_from_running, running_moments_update

__all__ = ["ProbeMoments", "probe_seed_state", "unpack"]


def probe_seed_state(seed, index, generator, dtype):
    """The state generator number `generator` starts from at recording `index` (an
    epoch or a step) of a monitor with `seed`: two 32-bit words of
    `numpy.random.SeedSequence([seed, index, generator])`, so that different seeds,
    recordings and generators get unrelated streams, on every backend's seed dtype
    (int64 on TensorFlow, uint32 on JAX).
    """
    words = np.random.SeedSequence([seed % 2**64, index, generator]).generate_state(2)
    return keras.ops.convert_to_tensor(np.asarray(words).astype(dtype))


def unpack(data):
    """`(x, y, sample_weight)` from `(x, y)`, `(x, y, sample_weight)` or `x` alone."""
    if isinstance(data, (tuple, list)):
        data = tuple(data) + (None,) * (3 - len(data))
        return data[:3]
    return data, None, None


class ProbeMoments:
    """`probe(model, index)`: per-variable `tge.diagnostics.GradientMoments` of
    `num_draws` gradients of the loss on `data`, at the model's current weights.

    Pass the model as a callback's `self.model` at each call: on JAX, reading
    `Callback.model` writes the training state back into the model's variables, which
    Keras's JAX trainer otherwise leaves empty between the steps of an epoch.

    The draws run in one compiled loop (`keras.ops.fori_loop`) with running (Welford)
    moments, so memory is that of three copies of the weights. Each draw runs the loss
    as a pure function of the variables' values (`tfp_gradest._backend.stateless`: a
    `keras.StatelessScope`, the mechanism of `Layer.stateless_call`), differentiated by
    the backend (`tf.GradientTape`; `jax.value_and_grad` inside one `jax.jit`); what the
    loss advances (the `SeedGenerator`s, a BatchNorm's statistics) is carried to the next
    draw, and nothing is assigned to the model. For recording `index`, the model's
    `SeedGenerator` number `i` (`keras_private.seed_state_variables` order) starts from
    `probe_seed_state(seed, index, i, dtype)`.

    Args:
      model: the Keras model, built.
      data: `(x, y, sample_weight)` (see `unpack`).
      num_draws: Python `int` ≥ 2.
      seed: Python `int`.
      loss_fn: `None` (`model.compute_loss` on `model(x, training=True)`) or a
        callable `(model, x, y, sample_weight) -> scalar`.
      jit_compile: compile with XLA (TensorFlow; JAX always compiles).
    """

    def __init__(self, model, data, num_draws, seed, loss_fn, jit_compile):
        self._model, self.num_draws, self.seed = model, num_draws, seed
        self._loss_fn = loss_fn
        self._data = keras.tree.map_structure(_as_tensor, data)
        self._function = self._compiled(jit_compile)

    def _loss(self, x, y, sample_weight):
        model = self._model
        if self._loss_fn is not None:
            return self._loss_fn(model, x, y, sample_weight)
        y_pred = model(x, training=True)
        return model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )

    def _compiled(self, jit_compile):
        backend = _backend.current()
        trainable = list(self._model.trainable_variables)
        state = list(self._model.non_trainable_variables)
        num_draws = self.num_draws

        def probe(trainable_values, state_values, data):
            pure = _backend.stateless(lambda: self._loss(*data), trainable, state)

            def body(n, carry):
                state_values, mean, m2 = carry
                (_, state_values), grads = backend.value_and_grad(
                    lambda values: pure(values, state_values), trainable, trainable_values
                )
                new_mean, new_m2 = [], []
                for g, mu, s in zip(grads, mean, m2):
                    count = keras.ops.cast(n + 1, mu.dtype)
                    mu, s = running_moments_update(count, mu, s, keras.ops.cast(g, mu.dtype))
                    new_mean.append(mu)
                    new_m2.append(s)
                return state_values, new_mean, new_m2

            zeros = [keras.ops.zeros(v.shape, v.dtype) for v in trainable]
            _, mean, m2 = keras.ops.fori_loop(0, num_draws, body, (state_values, zeros, zeros))
            return mean, m2

        return backend.compiled(probe, jit_compile)

    def __call__(self, model, index):
        seeds = {id(v): i for i, v in enumerate(keras_private.seed_state_variables(model))}
        state_values = [
            probe_seed_state(self.seed, index, seeds[id(v)], v.dtype)
            if id(v) in seeds
            else keras.ops.convert_to_tensor(v)
            for v in model.non_trainable_variables
        ]
        trainable_values = [keras.ops.convert_to_tensor(v) for v in model.trainable_variables]
        mean, m2 = self._function(trainable_values, state_values, self._data)
        return [
            moments_from_running(
                keras.ops.convert_to_numpy(mu),
                keras.ops.convert_to_numpy(s),
                self.num_draws,
                np.dtype(v.dtype).type,
            )
            for mu, s, v in zip(mean, m2, model.trainable_variables)
        ]


def _as_tensor(value):
    return None if value is None else keras.ops.convert_to_tensor(value)
