"""`bayesian_mlp`: the Bayesian MLP of `DenseReparameterization` layers that the problems,
tests, benchmarks and notebooks build (one builder instead of a copy in each)."""

import keras

from tfp_gradest.layers.dense import DenseReparameterization

__all__ = ["bayesian_mlp"]


def bayesian_mlp(
    input_shape,
    units,
    activation="relu",
    *,
    gradient_estimator=None,
    seed=None,
    names=None,
    **layer_kwargs,
):
    """A `keras.Sequential` of `DenseReparameterization` layers: a Bayesian MLP classifier.

    `keras.Input(input_shape)`, then one layer per entry of `units`, each but the last
    with `activation` (the last gives logits).

    Args:
      input_shape: shape of one example, e.g. `(64,)` (as `keras.Input`).
      units: sequence of Python `int`s, the layers' widths; the last is the number of
        outputs (classes).
      activation: activation of every layer but the last. Default value: `"relu"`.
      gradient_estimator: every layer's estimator (a name or an instance); `None` passes
        nothing, so each layer takes its default. Default value: `None`.
      seed: Python `int` or `None`. Layer `i` (from 0) draws its noise with seed
        `seed + i` and initialises its posterior means with
        `keras.initializers.GlorotUniform(seed + i)` (unless `kernel_loc_initializer`
        is given), so the model is reproducible without a global seed. `None`: Keras's
        global seed decides. Default value: `None`.
      names: optional sequence of layer names, one per entry of `units`.
        Default value: `None` (Keras's names).
      **layer_kwargs: passed to every layer (`kl_weight`, `inference_mode`,
        `initial_posterior_scale`, ...).

    Returns:
      An uncompiled `keras.Sequential`.

    #### Examples

    ```python
    model = tge.layers.bayesian_mlp((64,), [200, 10], kl_weight=1 / n, seed=0)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """
    units = list(units)
    if not units:
        raise ValueError(
            "`units` must list at least one layer width, e.g. [200, 10]. Received: units=[]"
        )
    if names is not None and len(list(names)) != len(units):
        raise ValueError(
            f"`names` must name each of the {len(units)} layers of `units`. Received: "
            f"names={names!r}, units={units!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"`seed` must be a Python int or None. Received: seed={seed!r}")
    names = [None] * len(units) if names is None else list(names)
    if gradient_estimator is not None:
        layer_kwargs["gradient_estimator"] = gradient_estimator
    layers = [keras.Input(tuple(input_shape))]
    for index, (width, name) in enumerate(zip(units, names)):
        kwargs = dict(layer_kwargs)
        if seed is not None:
            kwargs["seed"] = seed + index
            kwargs.setdefault(
                "kernel_loc_initializer", keras.initializers.GlorotUniform(seed + index)
            )
        last = index == len(units) - 1
        layers.append(
            DenseReparameterization(
                width, activation=None if last else activation, name=name, **kwargs
            )
        )
    return keras.Sequential(layers)
