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
    independent Normal per coordinate, pushed through the bijector); `"full_rank"`: one
    Gaussian with a lower-triangular scale over all the unconstrained coordinates
    (`dense_full_rank`: `build_affine_surrogate_posterior(operators="tril")`'s
    distribution, parameters and initial values, with its scale as one dense matrix).
    `seed` draws the initial values.
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
        return dense_full_rank(
            tfp.experimental.vi.build_affine_surrogate_posterior(operators="tril", **arguments)
        )
    raise ValueError(f"`family` must be one of {SURROGATE_FAMILIES}. Received: family={family!r}")


def dense_full_rank(block_surrogate):
    """`block_surrogate` (from `build_affine_surrogate_posterior(operators="tril")`) with one
    dense lower-triangular scale in place of its block-lower-triangular one.

    TFP's builder gives a structured event of P parts a `LinearOperatorBlockLowerTriangular`
    of P (P + 1) / 2 blocks, each its own variable and its own matrix product: 528 for
    BrownianMotionUnknownScalesMissingMiddleObservations' 32 scalar parts, 465 for
    ConvectionLorenzBridge's 30 parts of 3. The training programs of those targets grow
    with the blocks (the module docstring of `inference_gym.py` says how far). Here the
    parts' standard-normal draws are the builder's own (the same base distribution, so
    the same draws for a seed), concatenated into one vector, multiplied by one dense
    lower-triangular scale, shifted by one location vector and split back into the parts:
    the same distribution, the same initial values, and the same parameters up to their
    order (the entries below the diagonal unconstrained, the diagonal kept positive by the
    builder's own `|x| + eps`; the builder may start a diagonal entry's x negative where
    this starts it at -x, the same scale), so Adam, which works entry by entry and whose
    steps from -x mirror those from x, takes the same steps (up to float rounding).
    """
    import tensorflow as tf
    import tensorflow_probability as tfp
    from tensorflow_probability.python.experimental.vi.util import trainable_linear_operators

    tfb = tfp.bijectors
    *outer, unflatten, shifts, scale = block_surrogate.bijector.bijectors
    locs = [b.shift for b in tf.nest.flatten(shifts.bijectors)]
    sizes = [int(loc.shape[-1]) for loc in locs]
    loc_dtype = locs[0].dtype
    # The builder's own constraint of its diagonal blocks (`FillScaleTriL`, the diagonal as
    # `|x| + eps`), so the unconstrained parameters are the builder's own (TFP has no
    # public name for that diagonal bijector).
    fill = tfb.FillScaleTriL(
        trainable_linear_operators._DefaultScaleDiagonal(), diag_shift=tf.zeros([], loc_dtype)
    )
    loc = tf.Variable(tf.concat([tf.convert_to_tensor(v) for v in locs], -1), name="loc")
    scale_tril = tfp.util.TransformedVariable(scale.scale.to_dense(), fill, name="scale_tril")
    split = tfb.Split(sizes, axis=-1)
    # The builder's base: its parts' standard normals (so the same draws for a seed), each
    # flattened with its size stated (the builder's flattening leaves the sizes unknown,
    # which `Split` cannot invert outside a graph), then concatenated.
    joint = block_surrogate.distribution.distribution
    part_shapes = [s.numpy().tolist() for s in tf.nest.flatten(joint.event_shape_tensor())]
    flatten = tfb.Chain(
        [
            tfb.Invert(split),
            tfb.JointMap([tfb.Reshape([n], event_shape_in=s) for n, s in zip(sizes, part_shapes)]),
            tfb.Restructure(
                list(range(len(sizes))),
                tf.nest.pack_sequence_as(joint.event_shape_tensor(), list(range(len(sizes)))),
            ),
        ]
    )
    bijector = tfb.Chain(
        [*outer, unflatten, split, tfb.Shift(loc), tfb.ScaleMatvecTriL(scale_tril)]
    )
    return tfp.distributions.TransformedDistribution(
        tfp.distributions.TransformedDistribution(joint, flatten), bijector
    )
