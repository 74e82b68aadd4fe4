"""Structured samples: calling a user's target with them, stopping and reshaping them."""

import inspect
from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_probability as tfp


def call_target(target_log_prob_fn, samples, seed=None):
    """Calls `target_log_prob_fn` with `samples` the way `tfp.vi` 0.25 does.

    Unpacking follows TFP's `nest_util.call_fn`: `fn(*samples)` for a sequence
    that is not a namedtuple, and for a structure that asks to be expanded as
    arguments (the `StructTuple` a `JointDistributionCoroutine` samples);
    `fn(**samples)` for a mapping; `fn(samples)` otherwise. So any target
    written for `tfp.vi.fit_surrogate_posterior` works unchanged.

    A target with a `seed` parameter gets `seed=seed` (a per-call stateless seed),
    as `tfp.vi` passes one. (`tfp.vi` tries every target with a seed first and
    falls back on any exception; reading the signature gives the same call for
    a target that names `seed`, without calling the target twice. A target that
    takes only `**kwargs` gets no seed.)
    """
    kwargs = {"seed": seed} if seed is not None and _takes_seed(target_log_prob_fn) else {}
    if _expands_as_args(samples):
        return target_log_prob_fn(*samples, **kwargs)
    if isinstance(samples, Mapping) and not hasattr(samples, "_tfp_nest_expansion_force_leaf"):
        return target_log_prob_fn(**samples, **kwargs)
    return target_log_prob_fn(samples, **kwargs)


def _expands_as_args(samples):
    # TFP's structures declare their expansion with these two attributes (a
    # public duck-typing protocol of `tf.nest`-like structures, not an import).
    if hasattr(samples, "_tfp_nest_expansion_force_args"):
        return True
    if hasattr(samples, "_tfp_nest_expansion_force_leaf"):
        return False
    return isinstance(samples, Sequence) and not hasattr(samples, "_fields")


def _takes_seed(fn):
    try:
        parameter = inspect.signature(fn).parameters.get("seed")
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def stop_gradient(structure):
    """`tf.stop_gradient` on every Tensor of a (possibly nested) sample."""
    return tf.nest.map_structure(tf.stop_gradient, structure)


def non_reparameterized_parts(distribution):
    """Names (or indices) of the parts of `distribution` that are not fully reparameterised.

    A plain distribution is one part, reported as `[None]` when not reparameterised.
    """
    types = distribution.reparameterization_type
    if not tf.nest.is_nested(types):
        return [] if types == tfp.distributions.FULLY_REPARAMETERIZED else [None]
    paths = tf.nest.flatten(_paths(types))
    return [
        p
        for p, t in zip(paths, tf.nest.flatten(types))
        if t != tfp.distributions.FULLY_REPARAMETERIZED
    ]


def _paths(structure):
    if isinstance(structure, Mapping):
        return {k: k for k in structure}
    if hasattr(structure, "_fields"):
        return type(structure)(*structure._fields)
    # A plain list: TensorFlow's ListWrapper (a list a tf.Module tracks) takes no `range`.
    return list(range(len(structure)))


def is_fully_reparameterized(distribution):
    return not non_reparameterized_parts(distribution)


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
