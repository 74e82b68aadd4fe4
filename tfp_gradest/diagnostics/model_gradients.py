"""Gradient draws of a Keras model (or any loss of Keras variables), on TensorFlow or JAX.

The loss takes no argument: its noise comes from the `keras.random.SeedGenerator`s it
advances (a model or layer of `tge.layers` called with `training=True`). Every draw
gets fresh noise, on both backends: on TensorFlow the generators advance as the loss
runs; on JAX the loss runs as a pure function of the variables' values and the
generators' states (`state_variables`), which the loop carries and writes back. The
backend-specific parts are `tfp_gradest._backend`'s `gradient_step` and
`gradient_draws`. For a TFP estimator's loss, which takes a seed, see `draws.py`.
"""

import numpy as np

from tfp_gradest import _backend
from tfp_gradest.diagnostics.statistics import gradient_moments

__all__ = ["model_gradient_draws", "model_gradient_function", "model_gradient_variance"]


def model_gradient_function(loss_fn, variables, state_variables=(), jit_compile=False):
    """One gradient draw per call: `() -> (loss, gradients)`; build once, call many times.

    Args:
      loss_fn: callable `() -> scalar`, reading `variables` (Keras variables). Each call may
        draw fresh noise by advancing `keras.random.SeedGenerator`s.
      variables: the Keras variables to differentiate with respect to.
      state_variables: every other variable `loss_fn` assigns, typically the
        `non_trainable_variables` of the model (its `SeedGenerator` states). Needed on
        JAX, which writes their new values back after each call and refuses a loss that
        assigns a variable not listed (`ValueError`); TensorFlow assigns them as the
        loss runs. Default value: `()`.
      jit_compile: compile with XLA (`tf.function(jit_compile=True)` / `jax.jit`).
        Default value: `False`.

    Returns:
      A callable returning `(loss, gradients)`, backend tensors, one gradient per
      variable (zeros for a variable the loss does not reach).

    #### Examples

    ```python
    model = keras.Sequential([keras.Input((4,)), tge.layers.DenseReparameterization(2)])
    step = tge.diagnostics.model_gradient_function(
        lambda: keras.ops.sum(model(x, training=True)),
        model.trainable_variables,
        state_variables=model.non_trainable_variables,
    )
    loss, gradients = step()  # fresh noise at every call
    ```
    """
    variables, state_variables = _checked(variables, state_variables)
    return _backend.current().gradient_step(loss_fn, variables, state_variables, jit_compile)


def model_gradient_draws(loss_fn, variables, num_draws, state_variables=(), jit_compile=True):
    """`num_draws` independent gradient draws of `loss_fn()`, in one compiled loop.

    Arguments as `model_gradient_function`. The draws run in one `tf.map_fn` (TensorFlow)
    or `jax.lax.scan` (JAX), so there is no Python per draw; the `SeedGenerator`s end
    where the last draw left them.

    Args:
      loss_fn: callable `() -> scalar` (see `model_gradient_function`).
      variables: the Keras variables to differentiate with respect to.
      num_draws: Python `int >= 1`.
      state_variables: as `model_gradient_function`. Default value: `()`.
      jit_compile: compile with XLA. Default value: `True`.

    Returns:
      A list with one numpy array of shape `[num_draws, *variable.shape]` per variable.
    """
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(
            f"`num_draws` must be a Python int >= 1. Received: num_draws={num_draws!r}"
        )
    variables, state_variables = _checked(variables, state_variables)
    grads = _backend.current().gradient_draws(
        loss_fn, variables, state_variables, num_draws, jit_compile
    )
    return [np.asarray(g) for g in grads]


def model_gradient_variance(loss_fn, variable, num_draws=300, state_variables=(), jit_compile=True):
    """Mean over elements of the variance of `∂ loss_fn() / ∂ variable` over `num_draws` draws.

    The variance is `tge.diagnostics.gradient_moments`' (unbiased, `ddof=1`) of
    `model_gradient_draws(loss_fn, [variable], num_draws, ...)`, as the layer
    estimators are compared (`benchmarks/layers.py`).

    Args:
      loss_fn: callable `() -> scalar` (see `model_gradient_function`).
      variable: a `keras.Variable` the loss depends on.
      num_draws: Python `int >= 2`. Default value: `300`.
      state_variables: as `model_gradient_function`. Default value: `()`.
      jit_compile: compile with XLA. Default value: `True`.

    Returns:
      A Python `float`.
    """
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(
            f"`num_draws` must be a Python int >= 2 (a variance needs two draws). "
            f"Received: num_draws={num_draws!r}"
        )
    (draws,) = model_gradient_draws(loss_fn, [variable], num_draws, state_variables, jit_compile)
    return float(np.mean(gradient_moments(draws).variance))


def _checked(variables, state_variables):
    """Lists, with the variables left out of the state (a variable is one or the other)."""
    variables = list(variables)
    differentiated = {id(v) for v in variables}
    return variables, [v for v in state_variables if id(v) not in differentiated]
