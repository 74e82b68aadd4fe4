"""The TensorFlow substrate of the estimators (see `tfp_gradest._substrate`).

Every function here is the TensorFlow operation the estimators used before the
substrate layer existed, so TensorFlow results are unchanged bit for bit.
"""

import numbers
import sys

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_gradest._substrate import _messages
from tfp_gradest._util import seeds as _seeds

NAME = "tensorflow"

# Structures.
flatten = tf.nest.flatten
pack_sequence_as = tf.nest.pack_sequence_as
is_nested = tf.nest.is_nested
map_structure = tf.nest.map_structure


def stop_gradient(structure):
    """`tf.stop_gradient` on every Tensor of a (possibly nested) sample."""
    return tf.nest.map_structure(tf.stop_gradient, structure)


def is_array(x):
    return tf.is_tensor(x)


def is_deferred(x):
    """Whether `x` is a `tfp.experimental.util.DeferredModule` (built at every attribute access).

    Reads `sys.modules`, importing nothing: `tfp.experimental` takes seconds to import, and
    a `DeferredModule` can only exist once its module is imported.
    """
    module = sys.modules.get("tensorflow_probability.python.experimental.util.deferred_module")
    return module is not None and isinstance(x, module.DeferredModule)


def name_scope(name):
    return tf.name_scope(name)


# Seeds.
def sanitize_seed(seed):
    """A TFP stateless seed (int32 `[2]`); a JAX key is a `TypeError` naming `seed`."""
    if seed is not None and _is_jax_object(seed):
        raise TypeError(
            "`seed` is a JAX PRNG key, but `surrogate_posterior` is a TensorFlow "
            "distribution. Pass an int, a pair of ints or a TFP stateless seed (an int32 "
            "Tensor of shape [2]), or build the surrogate with "
            "`tensorflow_probability.substrates.jax` to use JAX. "
            f"Received: seed={seed!r}"
        )
    return _seeds.sanitize_seed(seed)


def _is_jax_object(x):
    from tfp_gradest._substrate import name_of

    return name_of(x) == "jax"


def split_seed(seed, n):
    return tfp.random.split_seed(seed, n=n)


# Array operations, named and behaving as TensorFlow's.
where = tf.where
zeros_like = tf.zeros_like
ones_like = tf.ones_like
equal = tf.equal
is_inf = tf.math.is_inf
is_finite = tf.math.is_finite
is_nan = tf.math.is_nan
exp = tf.exp
log = tf.math.log
square = tf.square
reduce_logsumexp = tf.reduce_logsumexp
reduce_sum = tf.reduce_sum
reduce_mean = tf.reduce_mean
reduce_max = tf.reduce_max
reduce_all = tf.reduce_all
reduce_any = tf.reduce_any
stack = tf.stack
squeeze = tf.squeeze
argmax = tf.argmax
one_hot = tf.one_hot
divide_no_nan = tf.math.divide_no_nan
cast = tf.cast
add_n = tf.add_n


def softmax(x, axis):
    return tf.nn.softmax(x, axis=axis)


def constant(value, dtype):
    return tf.constant(value, dtype)


def fill(like, value):
    """An array of `like`'s shape filled with `value` (of `like`'s dtype)."""
    return tf.fill(tf.shape(like), tf.constant(value, like.dtype))


# For `noise="rqmc"` (`tfp_gradest._util.quasi_random`).
reshape = tf.reshape
transpose = tf.transpose
bitwise_xor = tf.bitwise.bitwise_xor
ndtri = tf.math.ndtri


def right_shift(x, bits):
    return tf.bitwise.right_shift(x, tf.constant(bits, x.dtype))


def uniform_bits(shape, seed):
    """Uniformly random `uint32`s of `shape` from a stateless seed (every bit a fair coin)."""
    return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32)


def axis_size(x, axis):
    """`x`'s size along `axis` (a scalar int Tensor)."""
    return tf.shape(x)[axis]


def reshape_leading(tensor, sample_size, importance_sample_size):
    """Splits a leading `[S * K]` axis into `[S, K]`."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[sample_size, importance_sample_size], shape[1:]], 0))


def reduce_event(tensor, sample_rank):
    """Sums `tensor` over every axis after the first `sample_rank` (its event axes)."""
    rank = tensor.shape.rank
    if rank is None:
        return tf.reduce_sum(tensor, axis=tf.range(sample_rank, tf.rank(tensor)))
    return tf.reduce_sum(tensor, axis=list(range(sample_rank, rank)))


def fusion_barrier(tensors, like):
    """`tensors` unchanged, returned from a conditional so that XLA computes them once.

    A per-sample tensor computed from the forward pass (a weight, a mask) and read
    by the backward pass of every part of a structured sample is, under XLA, fused
    into each part's gradient, and so recomputed there with everything it depends
    on: on a 32-part surrogate that tripled the compiled program and doubled the
    compile time (benchmarks/vi_structured.py). The outputs of a `tf.cond` on a
    predicate read from the data (`like`: any NaN) are computed once. Both branches
    are the identity: values and gradients are unchanged; without XLA this costs
    one small conditional.
    """
    predicate = tf.reduce_any(tf.math.is_nan(like))
    return tf.cond(
        predicate,
        lambda: [tf.identity(t) for t in tensors],
        lambda: [tf.identity(t) for t in tensors],
    )


def surrogate_objective(value, surrogate, surrogate_is_finite=False):
    """`stop(value) + (surrogate - stop(surrogate))`, an infinite `surrogate` entry as 0.

    See `tfp_gradest.estimators.surrogate_objective` for the proof. With
    `surrogate_is_finite=True` (the path-weighted estimators, whose surrogate's value is
    exactly 0) no mask is built: it would cost a conditional per call for nothing.
    """
    if surrogate_is_finite:
        return tf.stop_gradient(value) + (surrogate - tf.stop_gradient(surrogate))
    return tf.stop_gradient(value) + _zero_with_finite_gradient(surrogate)


@tf.custom_gradient
def _zero_with_finite_gradient(surrogate):
    """`surrogate - stop(surrogate)` (0, NaN where `surrogate` is NaN) with an infinite
    entry's value and gradient 0.

    The gradient is `upstream * keep`, `keep` exactly 1 (finite or NaN entry: the
    gradient unchanged bit for bit) or 0 (infinite entry), computed ONCE in the forward
    pass, per sample. A `tf.where` mask of the cotangent (or a `tf.cond`, which XLA
    turns into selects) is cheap, so XLA's fusion duplicates it, with the whole forward
    computation of `surrogate` it reads, into every parameter's gradient: on a 32-part
    surrogate that made the step 3x `tfp.vi`'s (benchmarks/vi_structured.py). `keep`
    comes out of an `exp`, which XLA does not duplicate: every gradient reads one
    buffer of `S` numbers, as with `tfp.vi`'s constant cotangent.
    """
    infinite = tf.math.is_inf(surrogate)
    zeros = tf.zeros_like(surrogate)
    zero = tf.where(infinite, zeros, surrogate - surrogate)
    keep = tf.exp(tf.where(infinite, tf.constant(-np.inf, surrogate.dtype), zeros))

    def grad_fn(upstream):
        return upstream * keep

    return zero, grad_fn


def check_target_log_prob(target_lp, surrogate_lp, num_samples):
    """Raises naming `target_log_prob_fn` unless its output matches `log q(z)` in dtype and
    shape; see `tfp_gradest._util.log_weights.check_target_log_prob`."""
    if not tf.is_tensor(target_lp):
        if not isinstance(target_lp, (numbers.Number, np.ndarray, np.generic, list, tuple)):
            import keras

            # E.g. a JAX array from `keras.ops` under KERAS_BACKEND=jax: converting it would
            # keep its value and silently drop its gradient.
            raise TypeError(
                "`target_log_prob_fn` must return a TensorFlow tensor (write it with `tf` / "
                "`tfp` ops: the samples it receives are TensorFlow tensors), so that gradients "
                "reach the surrogate and the model; or build `surrogate_posterior` with "
                "`tensorflow_probability.substrates.jax` to run on JAX. The current Keras "
                f"backend is {keras.backend.backend()!r}; under KERAS_BACKEND=jax, `keras.ops` "
                "returns JAX arrays, so set KERAS_BACKEND=tensorflow to write the target with "
                f"`keras.ops`. Received: output of type {type(target_lp).__name__}"
            )
        # A Python number (a constant target) takes the surrogate's dtype.
        target_lp = tf.convert_to_tensor(target_lp, dtype_hint=surrogate_lp.dtype)
    if target_lp.dtype != surrogate_lp.dtype:
        raise TypeError(_messages.dtype_message(target_lp.dtype.name, surrogate_lp.dtype.name))
    expected, received = surrogate_lp.shape, target_lp.shape
    message = _messages.shape_message(expected, received, num_samples)
    if num_samples == 1 and expected == [1] and received == []:
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


def zero_where(zero_weight, gradient):
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


def concat(values, axis):
    """`tf.concat`."""
    return tf.concat(values, axis)


def vjp(fn, *primals):
    """`(fn(*primals), pullback)`, like `jax.vjp`: the outputs keep every gradient, and
    `pullback(cotangents)` (the outputs' structure) returns one vector-Jacobian product
    per primal (zeros where unconnected)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(primals)
        outputs = fn(*primals)

    def pullback(cotangents):
        return tape.gradient(
            tf.nest.flatten(outputs),
            list(primals),
            output_gradients=tf.nest.flatten(cotangents),
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    return outputs, pullback


def path_derivative(log_weights_fn, stopped, with_path):
    """`(log_weights, target_lp, surrogate_lp, grads)` of `log_weights_fn(stopped)`.

    `log_weights_fn(z) -> (log_w, target_lp, surrogate_lp)`; `grads` are
    `∂ Σ log w / ∂z` at the stopped samples, one per flat part (zeros where
    unconnected), or `None` when `with_path` is false. The outputs keep their
    gradients to everything but `stopped`.
    """
    flat_stopped = tf.nest.flatten(stopped)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        if with_path:
            tape.watch(flat_stopped)
        log_weights, target_lp, surrogate_lp = log_weights_fn(stopped)
    grads = None
    if with_path:
        grads = tape.gradient(
            log_weights, flat_stopped, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
    return log_weights, target_lp, surrogate_lp, grads


def path_weighted_vjp(
    surrogate_posterior, target_lp_fn, samples, split, coefficients_fn, sample_log_prob=None
):
    """`(log_weights, surrogate)` of `path_weighted_surrogate`, with `tf.custom_gradient`.

    `target_lp_fn(z, surrogate_lp)` calls and checks the target. `sample_log_prob`:
    `log q(samples)` as the sampler computed it (`experimental_sample_and_log_prob`),
    for the log-weights' value; `None`: `surrogate_posterior.log_prob(samples)`. See
    `tfp_gradest._util.log_weights.path_weighted_surrogate` for the mathematics.
    """
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
            # By keyword: no name resolution (a JointDistributionSequential's can clash).
            # Only its gradient in `z` is used when `sample_log_prob` gives the value.
            surrogate_lp = surrogate_posterior.log_prob(value=z)
            if sample_log_prob is not None:
                surrogate_lp_value = tf.stop_gradient(sample_log_prob)
            else:
                surrogate_lp_value = surrogate_lp
            target_lp = target_lp_fn(z, surrogate_lp_value)
        log_w = tf.stop_gradient(split(target_lp - surrogate_lp_value))
        c, a = coefficients_fn(log_w)
        # 1, or 0 for a sample of zero weight, out of an `exp` (see
        # `_zero_with_finite_gradient`): a per-sample compare read by the backward pass
        # would be a separate unit of work beside the target's first matrix product,
        # which XLA:CPU then hands to another thread (benchmarks/vi_overhead.py's
        # context switches per call).
        merged = merge(log_w)
        keep = tf.exp(
            tf.where(
                tf.equal(merged, -float("inf")),
                tf.constant(-np.inf, merged.dtype),
                tf.zeros_like(merged),
            )
        )
        if num_parts > 1:
            # Read by every part's backward pass: computed once under XLA (see
            # fusion_barrier); with one part there is nothing to recompute.
            c, a, keep = fusion_barrier([c, a, keep], log_w)

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
            zero_weight = tf.equal(keep, 0.0)
            z_grads = []
            for from_p, q_part in zip(grads[:num_parts], from_q):
                event_rank = from_p.shape.rank - ratio.shape.rank
                scale = tf.reshape(
                    ratio, tf.concat([tf.shape(ratio), tf.ones([event_rank], tf.int32)], 0)
                )
                z_grads.append(zero_where(zero_weight, scale * from_p - q_part))
            return z_grads, grads[num_parts:]

        return (tf.zeros_like(log_w[:, 0]), log_w), grad_fn

    surrogate, log_weights = surrogate_fn(*flat_samples)
    return tf.stop_gradient(log_weights), surrogate


def custom_backward(value, primals, residuals, backward):
    """`value` (gradient stopped), whose cotangent goes to `primals` as `backward(residuals,
    upstream)` (one cotangent per primal) instead of through whatever computed `value`.

    `residuals` are stopped arrays the backward pass reads (`backward` closes over nothing
    traced: on JAX it must not). For `tfp_gradest.estimators.control_variate`.
    """
    residuals = [tf.stop_gradient(r) for r in residuals]

    @tf.custom_gradient
    def fn(*primals):
        def grad_fn(upstream):
            return list(backward(residuals, upstream))

        return tf.identity(tf.stop_gradient(value)), grad_fn

    return fn(*primals)
