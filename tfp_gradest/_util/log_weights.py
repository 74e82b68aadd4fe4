"""Log importance weights `log w = log p(x, z) - log q(z)`, and their gradient paths.

The data path of one estimator step is: seed -> samples -> target and surrogate
log-densities -> log-weights -> the estimator's surrogate. This module owns the
middle arrows. Each estimator enters it at exactly one point, named by its
`data_path` flag (see `GradientEstimator`), and each point serves one need:

| `data_path`                | gives                                   | used by                   |
|----------------------------|-----------------------------------------|---------------------------|
| `pathwise_log_weights`     | `log w(z)`, every gradient live         | reparameterisation, IWAE, |
|                            |                                         | JVI, score function       |
|                            |                                         | (pathwise parts)          |
| `log_weight_terms`         | `log p̃`, `log q̃`, `log ŵ` kept apart    | RWS, VIMCO, JVI-DReG,     |
|                            | (direct, score and path gradients)      | score function            |
| `path_weighted_surrogate`  | `Σ c ∇log p̃ + a ∇log ŵ` in ONE backward | STL, IWAE-DReG, RWS-DReG, |
|                            | pass through the target                 | DReG(α), IWAE-STL         |

Samples are drawn as `tfp.vi` draws them: one flat leading axis of size `S * K`
(so targets written for `tfp.vi` work unchanged), from the first half of the
call's split seed; a target that takes a `seed` argument gets the second half.
With the same stateless seed the samples are therefore those of
`tfp.vi.monte_carlo_variational_loss`. Log-weights are returned with the
leading axis split into `[S, K]`.

Zero and NaN densities. A sample where the target's density is zero has
`log w = -inf` and normalised weight exactly 0, so it contributes nothing to
the gradient; the gradients masked here are exactly those (where `0 * inf`
would otherwise put NaN into the sums). A NaN from the target is never masked:
it reaches the loss and the gradient, so training fails loudly.
"""

import numbers
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfp_gradest._util import structure

__all__ = [
    "DATA_PATHS",
    "LogWeightTerms",
    "ObjectiveInputs",
    "PathwiseLogWeights",
    "log_weight_terms",
    "path_weighted_surrogate",
    "pathwise_log_weights",
]


# The values of an estimator's `data_path` flag: the functions below, one per need.
DATA_PATHS = ("pathwise_log_weights", "log_weight_terms", "path_weighted_surrogate")


class ObjectiveInputs(NamedTuple):
    """One validated estimator call: everything the data path reads.

    `sample_seed` and `target_seed` are the two halves of the call's stateless
    seed, split as `tfp.vi` splits it.
    """

    target_log_prob_fn: Any
    surrogate_posterior: Any
    sample_size: int
    importance_sample_size: int
    discrepancy_fn: Any
    sample_seed: Any
    target_seed: Any

    def split(self, tensor):
        """`[S * K] + rest` -> `[S, K] + rest`."""
        return structure.reshape_leading(tensor, self.sample_size, self.importance_sample_size)


class PathwiseLogWeights(NamedTuple):
    """`log w(z)` with every gradient live, and what it was computed from.

    * `samples`: the flat `[S * K]` samples `z = g_φ(ε)`.
    * `log_weights`: `log p_θ(x, z) - log q_φ(z)`, `[S, K] + batch_shape`.
    * `target_log_prob`: `log p_θ(x, z)`, `[S, K] + batch_shape`.
    """

    samples: Any
    log_weights: tf.Tensor
    target_log_prob: tf.Tensor


class LogWeightTerms(NamedTuple):
    """Log-weights at stopped samples `z̄`, split by where their gradient flows.

    In the stop-gradient notation of Tucker et al. (2019, appendix 8.3), with
    `z = g_φ(ε)`, every field has shape `[S, K] + batch_shape`:

    * `log_weights`: `log w = log p_θ(x, z̄) - log q_φ(z̄)`; gradient reaches `θ`
      and `φ` where they appear directly, never through `z`.
    * `target_log_prob`: `log p̃ = log p_θ(x, z̄)`; gradient to `θ` only.
    * `surrogate_log_prob`: `log q̃ = log q_φ(z̄)`; gradient to `φ` directly only.
    * `path_log_weights`: `log ŵ`, whose value is exactly `0` and whose gradient
      is the path derivative `(∂ log w / ∂z)|_z̄ · ∂z/∂φ` only.

    The full reparameterisation gradient of `log w(z)` is the gradient of
    `log p̃ - log q̃ + log ŵ` (direct plus path terms), which the tests check.
    """

    log_weights: tf.Tensor
    target_log_prob: tf.Tensor
    surrogate_log_prob: tf.Tensor
    path_log_weights: tf.Tensor


def _sample(inputs):
    """`S * K` samples (flat leading axis); gradients flow through reparameterised parts."""
    return inputs.surrogate_posterior.sample(
        [inputs.sample_size * inputs.importance_sample_size], seed=inputs.sample_seed
    )


def _target_log_prob(inputs, samples, surrogate_log_prob):
    """Calls the target as `tfp.vi` does, and checks its output against `log q`'s."""
    target_lp = structure.call_target(inputs.target_log_prob_fn, samples, seed=inputs.target_seed)
    return check_target_log_prob(target_lp, surrogate_log_prob, inputs)


def check_target_log_prob(target_lp, surrogate_lp, inputs):
    """Raises naming `target_log_prob_fn` unless its output matches `log q(z)` in dtype and shape.

    The target must return one log density per sample: shape `[S * K] +
    batch_shape`, exactly the shape of `surrogate_posterior.log_prob(z)`. A
    target that sums over the sample axis returns too few values; one that
    forgets to sum over the event axes returns too many. Both would otherwise
    broadcast into a wrong loss or fail inside TensorFlow with a message naming
    neither. Checked statically (always possible under XLA), else at run time.

    The one shape accepted besides: a scalar when there is one sample
    (`sample_size * importance_sample_size == 1`) and the batch shape is scalar,
    as `tfp.vi` accepts it. It is unambiguous there, and is reshaped to `[1]`.
    """
    if not tf.is_tensor(target_lp):
        if not isinstance(target_lp, (numbers.Number, np.ndarray, np.generic, list, tuple)):
            # E.g. a JAX array from `keras.ops` under KERAS_BACKEND=jax: converting it would
            # keep its value and silently drop its gradient.
            raise TypeError(
                "`target_log_prob_fn` must return a TensorFlow tensor (write it with `tf` / "
                "`tfp` ops: the samples it receives are TensorFlow tensors), so that gradients "
                f"reach the surrogate and the model. The current Keras backend is "
                f"{keras.backend.backend()!r}; under KERAS_BACKEND=jax, `keras.ops` returns "
                "JAX arrays, so set KERAS_BACKEND=tensorflow to write the target with "
                f"`keras.ops`. Received: output of type {type(target_lp).__name__}"
            )
        # A Python number (a constant target) takes the surrogate's dtype.
        target_lp = tf.convert_to_tensor(target_lp, dtype_hint=surrogate_lp.dtype)
    if target_lp.dtype != surrogate_lp.dtype:
        raise TypeError(
            f"`target_log_prob_fn` returned {target_lp.dtype.name} log densities, but "
            f"`surrogate_posterior` gives {surrogate_lp.dtype.name} ones: both must use the "
            "same float dtype. Build the surrogate's parameters in the target's dtype, or cast "
            f"inside the target. Received: target dtype={target_lp.dtype.name}, "
            f"surrogate dtype={surrogate_lp.dtype.name}"
        )
    expected, received = surrogate_lp.shape, target_lp.shape
    n = inputs.sample_size * inputs.importance_sample_size
    message = (
        f"`target_log_prob_fn` must return one log density per sample, of shape "
        f"[sample_size * importance_sample_size] + batch_shape = {expected} (the samples' "
        f"leading axis of size {n}, then `surrogate_posterior`'s batch shape). Did the target "
        "sum over the sample axis, or forget to sum over the event axes? "
        f"Received: output of shape {received}"
    )
    if n == 1 and expected == [1] and received == []:
        # One sample and a scalar batch shape: a scalar can only be that sample's log
        # density, and `tfp.vi` accepts it (its own tests' targets return `0.`).
        return tf.reshape(target_lp, [1])
    if expected.is_fully_defined() and received.is_fully_defined():
        if expected != received:
            raise ValueError(message)
        return target_lp
    if not expected.is_compatible_with(received):
        raise ValueError(message)
    with tf.control_dependencies(
        [tf.debugging.assert_equal(tf.shape(target_lp), tf.shape(surrogate_lp), message=message)]
    ):
        return tf.identity(target_lp)


def pathwise_log_weights(inputs):
    """`log w(z)` with every gradient live (parameters directly and through `z`).

    Uses `experimental_sample_and_log_prob`, as `tfp.vi` does, so a surrogate
    built from bijectors never has to invert them.

    Returns:
      A `PathwiseLogWeights`.
    """
    samples, surrogate_lp = inputs.surrogate_posterior.experimental_sample_and_log_prob(
        [inputs.sample_size * inputs.importance_sample_size], seed=inputs.sample_seed
    )
    target_lp = _target_log_prob(inputs, samples, surrogate_lp)
    return PathwiseLogWeights(
        samples=samples,
        log_weights=inputs.split(target_lp - surrogate_lp),
        target_log_prob=inputs.split(target_lp),
    )


def log_weight_terms(inputs, with_path=True):
    """Splits `log w` into direct, score and path parts (see `LogWeightTerms`).

    The path derivative is computed with an inner tape at the stopped samples
    and re-attached as `stop(∂ log w/∂z) · (z - z̄)`. Unlike stopping the
    surrogate's parameters, this also works when the target has trainable
    variables (a decoder): those receive gradient only through `log p̃`. It
    costs a second backward pass through the target; estimators with no score
    term use `path_weighted_surrogate` instead.

    The inner gradient is of `Σ_k log w_k`; it equals the per-sample gradients
    because each `log w_k` depends on its own `z_k` only: the target must treat
    the leading sample axis as independent draws, as `tfp.vi` also assumes.

    With `with_path=False` no inner gradient is taken and `path_log_weights` is
    zeros: for estimators that need no path term (RWS, VIMCO, the score
    function), which also work on discrete samples.
    """
    samples = _sample(inputs)
    stopped = structure.stop_gradient(samples)
    flat_stopped = tf.nest.flatten(stopped)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        if with_path:
            tape.watch(flat_stopped)
        surrogate_lp = inputs.surrogate_posterior.log_prob(stopped)
        target_lp = _target_log_prob(inputs, stopped, surrogate_lp)
        log_weights = target_lp - surrogate_lp
    if with_path:
        grads = tape.gradient(
            log_weights, flat_stopped, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        zero_weight = tf.equal(tf.stop_gradient(log_weights), -float("inf"))
        sample_rank = log_weights.shape.rank
        path = tf.add_n(
            [
                structure.reduce_event(
                    _zero_where(zero_weight, tf.stop_gradient(g)) * (z - z_bar), sample_rank
                )
                for g, z, z_bar in zip(grads, tf.nest.flatten(samples), flat_stopped)
            ]
        )
    else:
        path = tf.zeros_like(log_weights)
    return LogWeightTerms(
        log_weights=inputs.split(log_weights),
        target_log_prob=inputs.split(target_lp),
        surrogate_log_prob=inputs.split(surrogate_lp),
        path_log_weights=inputs.split(path),
    )


def _zero_where(zero_weight, gradient):
    """`gradient` with the samples of zero weight (`log w = -inf`) set to exactly 0.

    Such a sample's gradient can be `±inf` or `0 * inf = NaN`; it is multiplied
    by a zero weight, so the mathematics drops it. Every other value, NaN
    included, passes unchanged. `zero_weight` has the samples' leading shape;
    `gradient` may have event axes after it.
    """
    extra = gradient.shape.rank - zero_weight.shape.rank
    mask = tf.reshape(
        zero_weight, tf.concat([tf.shape(zero_weight), tf.ones([extra], tf.int32)], 0)
    )
    return tf.where(mask, tf.zeros_like(gradient), gradient)


def path_weighted_surrogate(inputs, coefficients_fn):
    """A surrogate of value 0 and gradient `Σ_k c_k ∇log p̃_k + a_k ∇log ŵ_k`, in ONE backward pass.

    `coefficients_fn(log_w) -> (c, a)` maps stopped log-weights `[S, K] + batch`
    to stopped coefficients of the same shape, with `c = a = 0` for a sample of
    zero weight. Estimators of the form `Σ w̃ log p̃ + a(w̃) log ŵ` (IWAE-DReG,
    RWS-DReG, DReG(α), IWAE-STL, and STL: the `K = 1` case) use `c = w̃`.

    Why one pass suffices: a single vector-Jacobian product of `log p(x, z)` with
    cotangent `c` gives `Σ c_k ∇θ log p_k` for the model's variables and
    `c_k ∇z log p_k` for each sample; the path term needs `a_k ∇z log p_k`, which
    is that times `a_k / c_k`. The surrogate's `∇z log q` is a second, cheap
    product through `log q` only. `q`'s parameters get no direct gradient (these
    estimators drop that score term) and reach the gradient through
    `z = g_φ(ε)`, outside this function. Compared with `log_weight_terms`, this
    saves one backward pass through a decoder.

    The surrogate's value is exactly 0 (only its gradient matters); the caller
    reports its objective's value through `surrogate_objective`.

    Returns:
      log_weights: `[S, K] + batch`, no gradient.
      surrogate: `[S] + batch`, all zeros.
    """
    samples = _sample(inputs)
    flat_samples = tf.nest.flatten(samples)
    num_parts = len(flat_samples)

    def merge(t):
        return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))

    @tf.custom_gradient
    def surrogate_fn(*flat_z):
        # Fresh tensors: TFP caches bijector inverses by tensor identity, so
        # `q.log_prob` of the very tensor `q.sample` returned would reuse the
        # cached noise `ε` and report `∂ log q / ∂z = 0`.
        flat_z = [tf.identity(t) for t in flat_z]
        z = tf.nest.pack_sequence_as(samples, flat_z)
        with tf.GradientTape(persistent=True, watch_accessed_variables=True) as tape:
            tape.watch(flat_z)
            surrogate_lp = inputs.surrogate_posterior.log_prob(z)
            target_lp = _target_log_prob(inputs, z, surrogate_lp)
        log_w = tf.stop_gradient(inputs.split(target_lp - surrogate_lp))
        c, a = coefficients_fn(log_w)
        zero_weight = tf.equal(merge(log_w), -float("inf"))
        # Read by every part's backward pass: computed once under XLA (see fusion_barrier).
        c, a, zero_weight = structure.fusion_barrier([c, a, zero_weight], log_w)

        def grad_fn(upstream, unused_log_w_upstream, variables=None):
            # The log-weights output is returned stopped, so its upstream is ignored.
            variables = list(variables or [])
            c_up, a_up = merge(c * upstream[:, tf.newaxis]), merge(a * upstream[:, tf.newaxis])
            grads = tape.gradient(
                target_lp,
                list(flat_z) + variables,
                output_gradients=c_up,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            from_q = tape.gradient(
                surrogate_lp,
                list(flat_z),
                output_gradients=a_up,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            ratio = merge(tf.math.divide_no_nan(a, c))
            z_grads = []
            for from_p, q_part in zip(grads[:num_parts], from_q):
                event_rank = from_p.shape.rank - ratio.shape.rank
                scale = tf.reshape(
                    ratio, tf.concat([tf.shape(ratio), tf.ones([event_rank], tf.int32)], 0)
                )
                z_grads.append(_zero_where(zero_weight, scale * from_p - q_part))
            return z_grads, grads[num_parts:]

        return (tf.zeros_like(log_w[:, 0]), log_w), grad_fn

    surrogate, log_weights = surrogate_fn(*flat_samples)
    return tf.stop_gradient(log_weights), surrogate
