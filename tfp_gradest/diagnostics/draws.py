"""Gradient draws of a loss that takes a seed (a TFP estimator's loss), in one compiled loop.

TensorFlow and TFP, imported when a function is first called (so importing
`tge.diagnostics` does not import them). For a Keras model or layer whose noise comes
from its own `SeedGenerator`s, on TensorFlow or JAX, see `model_gradients.py`.
"""

import functools

__all__ = [
    "compiled_function",
    "draw_seeds",
    "gradient_draws",
    "gradient_sampler",
]


def gradient_draws(loss_fn, variables, num_draws, seed, jit_compile=True):
    """Draws `num_draws` independent gradients of `loss_fn(seed)` w.r.t. `variables`.

    Each draw gets its own stateless seed split from `seed`, so a run is
    reproducible and any two draws are independent. The loop is one compiled
    `tf.map_fn` (no Python per draw); `gradient_sampler` returns that compiled
    loop, to draw again without compiling again.

    Args:
      loss_fn: callable `seed -> scalar loss`, e.g.
        `lambda s: est.loss(target, q, seed=s)`.
      variables: list of `tf.Variable` to differentiate with respect to.
      num_draws: Python `int`.
      seed: PRNG seed; see `tfp.random.sanitize_seed`.
      jit_compile: compile with XLA. Default value: `True`.

    Returns:
      A list of Tensors, one per variable, of shape `[num_draws] + var.shape`.
      A variable the loss does not reach gets zeros.
    """
    return gradient_sampler(loss_fn, variables, jit_compile)(draw_seeds(seed, num_draws))


def draw_seeds(seed, num_draws):
    """`num_draws` independent stateless seeds, shape `[num_draws, 2]`, split from `seed`."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    from tfp_gradest._util.seeds import sanitize_seed

    # A Tensor `n` makes TFP return one `[n, 2]` Tensor (the same values as the list it
    # returns for a Python int, without unstacking and restacking `n` eager tensors).
    return tfp.random.split_seed(sanitize_seed(seed), tf.constant(num_draws, tf.int32))


def gradient_sampler(loss_fn, variables, jit_compile=True):
    """The compiled loop of `gradient_draws`: `seeds [N, 2] -> gradients [N, ...]` per variable.

    Calling it again with seeds of the same shape reuses the compiled code.
    """
    import tensorflow as tf

    from tfp_gradest._backend import tensorflow as backend  # TFP losses: TensorFlow's tape

    variables = list(variables)
    signature = [tf.TensorSpec(v.shape, v.dtype) for v in variables]

    def one_draw(draw_seed):
        def loss(_):
            return tf.reduce_sum(loss_fn(draw_seed)), ()

        return backend.value_and_grad(loss, variables, None)[1]

    return compiled_function(functools.partial(_map_draws, one_draw, signature), jit_compile)


def compiled_function(fn, jit_compile):
    """`fn` as one compiled TensorFlow function (`tfp_gradest._backend`'s `compiled`).

    `tf.function` (XLA if `jit_compile`, no autograph), counted as its own function
    by TensorFlow's retracing warning (see `tfp_gradest._backend.tensorflow.compiled`).
    """
    from tfp_gradest._backend import tensorflow

    return tensorflow.compiled(fn, jit_compile)


def _map_draws(one_draw, signature, seeds):
    import tensorflow as tf

    return tf.map_fn(one_draw, seeds, fn_output_signature=signature)
