"""Structured samples: calling a user's target with them, stopping and reshaping them."""

from collections.abc import Mapping

import tensorflow as tf
import tensorflow_probability as tfp


def call_target(target_log_prob_fn, samples):
    """Calls `target_log_prob_fn` the way `tfp.vi` does.

    `fn(**samples)` for a dict, `fn(*samples)` for a list or tuple (not a
    namedtuple), `fn(samples)` otherwise, so any target written for
    `tfp.vi.fit_surrogate_posterior` works unchanged.
    """
    if isinstance(samples, Mapping):
        return target_log_prob_fn(**samples)
    if isinstance(samples, (list, tuple)) and not hasattr(samples, "_fields"):
        return target_log_prob_fn(*samples)
    return target_log_prob_fn(samples)


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
    return (
        type(structure)(range(len(structure)))
        if not hasattr(structure, "_fields")
        else type(structure)(*structure._fields)
    )


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
