"""Structured samples and surrogates: calling a user's target, finding reparameterised parts.

Imports neither TensorFlow nor JAX: the array work is the substrate's
(`tfp_gradest._substrate`), chosen from the distribution.
"""

import inspect
from collections.abc import Mapping, Sequence

from tfp_gradest import _substrate


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


def non_reparameterized_parts(distribution):
    """Names (or indices) of the parts of `distribution` that are not fully reparameterised.

    A plain distribution is one part, reported as `[None]` when not reparameterised.
    Works for TensorFlow and TFP-JAX distributions (each compared with its own
    substrate's `FULLY_REPARAMETERIZED`).
    """
    ops = _substrate.of(distribution)
    fully = ops.tfp.distributions.FULLY_REPARAMETERIZED
    types = distribution.reparameterization_type
    if not ops.is_nested(types):
        return [] if types == fully else [None]
    paths = ops.flatten(_paths(types))
    return [p for p, t in zip(paths, ops.flatten(types)) if t != fully]


def _paths(structure):
    if isinstance(structure, Mapping):
        return {k: k for k in structure}
    if hasattr(structure, "_fields"):
        return type(structure)(*structure._fields)
    # A plain list: TensorFlow's ListWrapper (a list a tf.Module tracks) takes no `range`.
    return list(range(len(structure)))


def is_fully_reparameterized(distribution):
    return not non_reparameterized_parts(distribution)
