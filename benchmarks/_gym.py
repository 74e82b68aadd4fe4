"""Inference Gym targets for the benchmarks: the target function and the surrogates over it.

Shared by `vi_structured.py` and `inference_gym.py`. Needs `inference-gym`
(`pip install -e .[extras]`); the package never imports it.
"""

import importlib
import os
import sys

SURROGATE_FAMILIES = ("mean_field", "full_rank")


def gym():
    """`inference_gym.using_tensorflow`, the package's, not `benchmarks/inference_gym.py`.

    With this folder on `sys.path` (as for every benchmark script), `import
    inference_gym` would find the benchmark of that name; so the package is imported
    with this folder off the path, and a benchmark module cached under the package's
    name is set aside first.
    """
    cached = sys.modules.get("inference_gym")
    if cached is not None and not hasattr(cached, "__path__"):  # the benchmark script
        del sys.modules["inference_gym"]
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.path[:]
    sys.path[:] = [p for p in path if os.path.abspath(p or os.curdir) != here]
    try:
        return importlib.import_module("inference_gym.using_tensorflow")
    finally:
        sys.path[:] = path


def load(name):
    """The Inference Gym target `name` (its TensorFlow substrate), built from its bundled data."""
    return getattr(gym().targets, name)()


def target_log_prob_fn(target):
    """`target.unnormalized_log_prob` taking the surrogate's samples as `tfp.vi` passes them.

    `fn(*parts)` for a `StructTuple`, `fn(**parts)` for a dict, `fn(z)` otherwise; it
    names `seed`, so `tfp.vi` and `tge.vi` both call it once, the same way.
    """
    if isinstance(target.dtype, dict):

        def log_prob(seed=None, **parts):
            return target.unnormalized_log_prob(parts)

    elif hasattr(target.dtype, "_fields"):

        def log_prob(*parts, seed=None):
            return target.unnormalized_log_prob(type(target.dtype)(*parts))

    else:

        def log_prob(z, seed=None):
            return target.unnormalized_log_prob(z)

    return log_prob


def build_surrogate(target, family="mean_field", seed=(0, 1)):
    """A trainable surrogate over `target`'s event-space bijector.

    `"mean_field"`: `tfp.experimental.vi.build_factored_surrogate_posterior` (an
    independent Normal per coordinate, pushed through the bijector); `"full_rank"`:
    `build_affine_surrogate_posterior` with `operators="tril"` (one Gaussian with a
    lower-triangular scale over all coordinates, block-structured by part). `seed`
    draws the initial locations.
    """
    import tensorflow_probability as tfp

    arguments = {
        "event_shape": target.event_shape,
        "bijector": target.default_event_space_bijector,
        "seed": seed,
    }
    if family == "mean_field":
        return tfp.experimental.vi.build_factored_surrogate_posterior(**arguments)
    if family == "full_rank":
        return tfp.experimental.vi.build_affine_surrogate_posterior(operators="tril", **arguments)
    raise ValueError(f"`family` must be one of {SURROGATE_FAMILIES}. Received: family={family!r}")
