"""The JAX substrate of the estimators (see `tfp_gradest._substrate`).

Surrogates are `tensorflow_probability.substrates.jax` distributions, seeds are JAX
PRNG keys (or ints, taken as `jax.random.PRNGKey(seed)`). Everything is pure and
traces under `jax.jit`; gradients are those of `jax.grad` of the loss with respect to
whatever the surrogate and the target were built from.
"""

import contextlib
import numbers
import sys

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from tfp_gradest._substrate import _messages

NAME = "jax"

_tree = jax.tree_util


# Structures.
def flatten(structure):
    return _tree.tree_leaves(structure)


def pack_sequence_as(structure, flat):
    return _tree.tree_unflatten(_tree.tree_structure(structure), list(flat))


def is_nested(structure):
    return not _tree.treedef_is_leaf(_tree.tree_structure(structure))


def map_structure(fn, *structures):
    return _tree.tree_map(fn, *structures)


def stop_gradient(structure):
    """`jax.lax.stop_gradient` on every array of a (possibly nested) sample."""
    return _tree.tree_map(jax.lax.stop_gradient, structure)


def is_array(x):
    return isinstance(x, jax.Array)


def is_deferred(x):
    """Whether `x` is a `DeferredModule` of TFP's JAX substrate (see the TensorFlow one).

    TFP 0.25's JAX substrate ships none (its surrogate builders are stateless), so this is
    `False` there; it reads `sys.modules` for the module should a later TFP ship one.
    """
    module = sys.modules.get(
        "tensorflow_probability.substrates.jax.experimental.util.deferred_module"
    )
    return module is not None and isinstance(x, module.DeferredModule)


def name_scope(name):
    del name
    return contextlib.nullcontext()


# Seeds.
_ACCEPTED = (
    "On JAX, `seed` must be a Python int (taken as `jax.random.PRNGKey(seed)`) or a JAX "
    "PRNG key (`jax.random.PRNGKey(...)`, `jax.random.key(...)`, one half of "
    "`jax.random.split`, or a pair of ints as TFP-JAX's examples write it)."
)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def sanitize_seed(seed):
    """A JAX PRNG key for `seed`; anything else is a `TypeError` naming it.

    An int maps to the same key every time (`jax.random.PRNGKey(seed)`); a key, or a
    pair of ints (`(0, 1)`, as TFP-JAX's examples and TensorFlow's stateless seeds
    write it), is kept as that key. JAX has no global random state, so `None` is
    refused rather than drawn statefully as TensorFlow does.
    """
    if _is_int(seed):
        return jax.random.PRNGKey(int(seed) % (1 << 32))
    if isinstance(seed, (list, tuple)) and len(seed) == 2 and all(map(_is_int, seed)):
        seed = np.asarray([int(s) % (1 << 32) for s in seed], np.uint32)
    if seed is None:
        raise TypeError(f"{_ACCEPTED} JAX has no global random state. Received: seed=None")
    if isinstance(seed, jax.Array) or isinstance(seed, np.ndarray):
        dtype = seed.dtype
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            return tfp.random.sanitize_seed(seed)
        if np.issubdtype(dtype, np.integer) and tuple(seed.shape) == (2,):
            return tfp.random.sanitize_seed(jnp.asarray(seed, jnp.uint32))
    kind = type(seed).__module__ or ""
    if kind.startswith("tensorflow"):
        raise TypeError(
            f"{_ACCEPTED} `surrogate_posterior` is a JAX distribution, but `seed` is a "
            f"TensorFlow tensor. Received: seed={seed!r}"
        )
    raise TypeError(f"{_ACCEPTED} Received: seed={seed!r}")


def split_seed(seed, n):
    return tfp.random.split_seed(seed, n=n)


# Array operations, named and behaving as TensorFlow's.
def where(condition, x, y):
    return jnp.where(condition, x, y)


zeros_like = jnp.zeros_like
ones_like = jnp.ones_like
equal = jnp.equal
is_inf = jnp.isinf
is_finite = jnp.isfinite
is_nan = jnp.isnan
exp = jnp.exp
log = jnp.log
square = jnp.square
stack = jnp.stack


def add_n(arrays):
    total = arrays[0]
    for x in arrays[1:]:
        total = total + x
    return total


def reduce_logsumexp(x, axis=None, keepdims=False):
    return jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)


def reduce_sum(x, axis=None, keepdims=False):
    return jnp.sum(x, axis=axis, keepdims=keepdims)


def reduce_mean(x, axis=None, keepdims=False):
    return jnp.mean(x, axis=axis, keepdims=keepdims)


def reduce_max(x, axis=None, keepdims=False):
    return jnp.max(x, axis=axis, keepdims=keepdims)


def reduce_all(x, axis=None, keepdims=False):
    return jnp.all(x, axis=axis, keepdims=keepdims)


def reduce_any(x, axis=None, keepdims=False):
    return jnp.any(x, axis=axis, keepdims=keepdims)


def squeeze(x, axis=None):
    return jnp.squeeze(x, axis=axis)


def argmax(x, axis):
    return jnp.argmax(x, axis=axis)


def one_hot(indices, depth, on_value=1.0, off_value=0.0, axis=-1):
    hot = jax.nn.one_hot(indices, depth, axis=axis) > 0
    return jnp.where(hot, on_value, off_value)


def divide_no_nan(x, y):
    zero = y == 0
    return jnp.where(zero, jnp.zeros_like(x), x / jnp.where(zero, jnp.ones_like(y), y))


def cast(x, dtype):
    return jnp.asarray(x).astype(dtype)


def softmax(x, axis):
    return jax.nn.softmax(x, axis=axis)


def constant(value, dtype):
    return jnp.asarray(value, dtype)


def fill(like, value):
    """An array of `like`'s shape filled with `value` (of `like`'s dtype)."""
    return jnp.full(jnp.shape(like), value, like.dtype)


# For `noise="rqmc"` (`tfp_gradest._util.quasi_random`).
bitwise_xor = jnp.bitwise_xor
ndtri = jax.scipy.special.ndtri


def reshape(x, shape):
    return jnp.reshape(x, tuple(shape))


def transpose(x, perm):
    return jnp.transpose(x, tuple(perm))


def right_shift(x, bits):
    return jnp.right_shift(x, jnp.asarray(bits, x.dtype))


def uniform_bits(shape, seed):
    """Uniformly random `uint32`s of `shape` from a PRNG key (every bit a fair coin)."""
    return jax.random.bits(seed, tuple(shape), jnp.uint32)


def axis_size(x, axis):
    """`x`'s size along `axis` (a Python int: shapes are static on JAX)."""
    return x.shape[axis]


def reshape_leading(tensor, sample_size, importance_sample_size):
    """Splits a leading `[S * K]` axis into `[S, K]`."""
    return jnp.reshape(tensor, (sample_size, importance_sample_size) + tuple(tensor.shape[1:]))


def reduce_event(tensor, sample_rank):
    """Sums `tensor` over every axis after the first `sample_rank` (its event axes)."""
    return jnp.sum(tensor, axis=tuple(range(sample_rank, tensor.ndim)))


def fusion_barrier(tensors, like):
    """`tensors` unchanged (XLA computes a `jax.custom_vjp`'s residuals once already)."""
    del like
    return list(tensors)


def surrogate_objective(value, surrogate, surrogate_is_finite=False):
    """`stop(value) + (surrogate - stop(surrogate))`, an infinite `surrogate` entry as 0.

    See `tfp_gradest.estimators.surrogate_objective` for the proof; with
    `surrogate_is_finite=True` no mask is built.
    """
    if surrogate_is_finite:
        return jax.lax.stop_gradient(value) + (surrogate - jax.lax.stop_gradient(surrogate))
    infinite = jnp.isinf(jax.lax.stop_gradient(surrogate))
    surrogate = jnp.where(infinite, jnp.zeros_like(surrogate), surrogate)
    return jax.lax.stop_gradient(value) + (surrogate - jax.lax.stop_gradient(surrogate))


def check_target_log_prob(target_lp, surrogate_lp, num_samples):
    """Raises naming `target_log_prob_fn` unless its output matches `log q(z)` in dtype and
    shape; see `tfp_gradest._util.log_weights.check_target_log_prob`. Shapes are static."""
    if not isinstance(target_lp, jax.Array):
        if (type(target_lp).__module__ or "").startswith("tensorflow"):
            raise TypeError(
                "`target_log_prob_fn` returned a TensorFlow tensor, but "
                "`surrogate_posterior` is a JAX distribution: write the target with "
                "`jax.numpy` / `tensorflow_probability.substrates.jax` ops (the samples it "
                "receives are JAX arrays), or build the surrogate with TensorFlow. "
                f"Received: output of type {type(target_lp).__name__}"
            )
        if not isinstance(target_lp, (numbers.Number, np.ndarray, np.generic, list, tuple)):
            raise TypeError(
                "`target_log_prob_fn` must return a JAX array of log densities. "
                f"Received: output of type {type(target_lp).__name__}"
            )
        # A Python number (a constant target) takes the surrogate's dtype.
        target_lp = jnp.asarray(target_lp, dtype=surrogate_lp.dtype)
    if target_lp.dtype != surrogate_lp.dtype:
        raise TypeError(_messages.dtype_message(target_lp.dtype.name, surrogate_lp.dtype.name))
    expected, received = tuple(surrogate_lp.shape), tuple(target_lp.shape)
    if num_samples == 1 and expected == (1,) and received == ():
        # One sample and a scalar batch shape: as `tfp.vi` accepts it.
        return jnp.reshape(target_lp, (1,))
    if expected != received:
        raise ValueError(_messages.shape_message(list(expected), list(received), num_samples))
    return target_lp


def _expand_to(mask, like):
    """`mask` (the samples' leading shape) with trailing unit axes to broadcast as `like`."""
    return jnp.reshape(mask, mask.shape + (1,) * (like.ndim - mask.ndim))


def zero_where(zero_weight, gradient):
    """`gradient` with the samples of zero weight (`log w = -inf`) set to exactly 0."""
    return jnp.where(_expand_to(zero_weight, gradient), jnp.zeros_like(gradient), gradient)


def concat(values, axis):
    """`tf.concat`: `jnp.concatenate`."""
    return jnp.concatenate(values, axis)


def vjp(fn, *primals):
    """`jax.vjp`: `(fn(*primals), pullback)`, `pullback(cotangents)` one product per primal."""
    return jax.vjp(fn, *primals)


def path_derivative(log_weights_fn, stopped, with_path):
    """`(log_weights, target_lp, surrogate_lp, grads)` of `log_weights_fn(stopped)`.

    One forward pass (`jax.vjp`); `grads` are `∂ Σ log w / ∂z` at the stopped samples,
    one per flat part, or `None` when `with_path` is false. The outputs keep their
    gradients to everything `log_weights_fn` closes over.
    """
    if not with_path:
        return (*log_weights_fn(stopped), None)
    outputs, vjp = jax.vjp(log_weights_fn, stopped)
    log_weights, target_lp, surrogate_lp = outputs
    (grads,) = vjp(
        (jnp.ones_like(log_weights), jnp.zeros_like(target_lp), jnp.zeros_like(surrogate_lp))
    )
    return log_weights, target_lp, surrogate_lp, flatten(grads)


def path_weighted_vjp(
    surrogate_posterior, target_lp_fn, samples, split, coefficients_fn, sample_log_prob=None
):
    """`(log_weights, surrogate)` of `path_weighted_surrogate`: one forward and one backward
    pass through the target.

    `sample_log_prob`: `log q(samples)` as the sampler computed it, for the log-weights'
    value (`None`: `log q` evaluated at the samples), as on TensorFlow.

    The target (with whatever model parameters it closes over) and `log q` are
    closure-converted (`jax.closure_convert`), so that their traced parameters become
    explicit arguments of a `jax.custom_vjp`. Its forward pass computes `log p`, `log q`
    and the coefficients `(c, a)`; its backward pass is ONE vector-Jacobian product of
    `log p` with cotangent `c` (giving `Σ c ∇θ log p` to the parameters and
    `c ∇z log p`, rescaled by `a / c`, to the samples) and one of `log q` with cotangent
    `a` to the samples only: `q`'s parameters get no direct (score) gradient, only
    the path one through `z = g_φ(ε)` outside this function.
    """
    flat_samples = flatten(samples)
    num_parts = len(flat_samples)
    treedef = _tree.tree_structure(samples)

    def unflatten(flat_z):
        return _tree.tree_unflatten(treedef, list(flat_z))

    surrogate_shape = jax.eval_shape(
        lambda *fz: surrogate_posterior.log_prob(value=unflatten(fz)), *flat_samples
    )

    def target_flat(*flat_z):
        return target_lp_fn(unflatten(flat_z), surrogate_shape)

    def surrogate_flat(*flat_z):
        # By keyword: no name resolution (a JointDistributionSequential's can clash).
        return surrogate_posterior.log_prob(value=unflatten(flat_z))

    target_fn, target_consts = jax.closure_convert(target_flat, *flat_samples)
    surrogate_fn, surrogate_consts = jax.closure_convert(surrogate_flat, *flat_samples)

    def merge(t):
        return jnp.reshape(t, (-1,) + tuple(t.shape[2:]))

    def forward(flat_z, p_consts, q_consts, lp_value):
        target_lp, target_vjp = jax.vjp(target_fn, *flat_z, *p_consts)
        surrogate_lp, surrogate_vjp = jax.vjp(lambda *fz: surrogate_fn(*fz, *q_consts), *flat_z)
        if lp_value is not None:
            surrogate_lp = lp_value
        log_w = jax.lax.stop_gradient(split(target_lp - surrogate_lp))
        c, a = coefficients_fn(log_w)
        zero_weight = merge(log_w) == -jnp.inf
        outputs = (jnp.zeros_like(log_w[:, 0]), log_w)
        residuals = (target_vjp, surrogate_vjp, c, a, zero_weight, q_consts, lp_value)
        return outputs, residuals

    @jax.custom_vjp
    def weighted(flat_z, p_consts, q_consts, lp_value):
        return forward(flat_z, p_consts, q_consts, lp_value)[0]

    def backward(residuals, cotangents):
        target_vjp, surrogate_vjp, c, a, zero_weight, q_consts, lp_value = residuals
        upstream, _ = cotangents  # the log-weights are returned stopped
        from_p = target_vjp(merge(c * upstream[:, None]))
        from_q = surrogate_vjp(merge(a * upstream[:, None]))
        ratio = merge(divide_no_nan(a, c))
        # Masked before they are combined: a `select` of the combination makes XLA compute
        # each part's whole backward pass once per reader of its gradient (a Normal's loc
        # and scale). Same values (`ratio` is 0 where `c = a = 0`, the zero weights).
        z_grads = tuple(
            _expand_to(ratio, p) * zero_where(zero_weight, p) - zero_where(zero_weight, q)
            for p, q in zip(from_p[:num_parts], from_q)
        )
        q_grads = tuple(jnp.zeros_like(x) for x in q_consts)
        lp_grad = None if lp_value is None else jnp.zeros_like(lp_value)
        return z_grads, tuple(from_p[num_parts:]), q_grads, lp_grad

    weighted.defvjp(forward, backward)
    lp_value = None if sample_log_prob is None else jax.lax.stop_gradient(sample_log_prob)
    surrogate, log_weights = weighted(
        tuple(flat_samples), tuple(target_consts), tuple(surrogate_consts), lp_value
    )
    return jax.lax.stop_gradient(log_weights), surrogate


def custom_backward(value, primals, residuals, backward):
    """`value` (gradient stopped), whose cotangent goes to `primals` as `backward(residuals,
    upstream)` (one cotangent per primal) instead of through whatever computed `value`.

    `residuals` are stopped arrays the backward pass reads (`backward` closes over nothing
    traced: a `jax.custom_vjp` must not). For `tfp_gradest.estimators.control_variate`.
    """

    @jax.custom_vjp
    def fn(primals, residuals, value):
        return value

    def forward(primals, residuals, value):
        return value, (residuals, value)

    def backward_fn(saved, upstream):
        residuals, value = saved
        zeros = _tree.tree_map(jnp.zeros_like, residuals)
        return tuple(backward(residuals, upstream)), zeros, jnp.zeros_like(value)

    fn.defvjp(forward, backward_fn)
    residuals = _tree.tree_map(jax.lax.stop_gradient, tuple(residuals))
    return fn(tuple(primals), residuals, jax.lax.stop_gradient(value))
