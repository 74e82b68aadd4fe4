"""`DenseReparameterization`: a Bayesian dense layer for Keras 3."""

import keras

from tfp_gradest.layers import settings
from tfp_gradest.layers.base import BayesianLayer
from tfp_gradest.r2g2 import DenseMap

__all__ = ["DenseReparameterization"]


@keras.saving.register_keras_serializable(package="tfp_gradest")
class DenseReparameterization(BayesianLayer):
    """A dense layer with a mean-field Normal posterior over its weights: `y = act(x W + b)`.

    ```none
    q(W, b) = Π N(μ, softplus(ρ)²),   prior N(0, prior_scale²),   loss += kl_weight · KL(q || prior)
    ```

    `gradient_estimator` is `"auto"` (default: the local reparameterisation
    trick for `[B, D]` inputs, see `tfp_gradest.layers.estimators.Auto`), one
    of `tfp_gradest.layers.GRADIENT_ESTIMATORS`, or an estimator object holding its
    options (`tge.layers.estimators.R2G2(cg_iterations=8)`). For a dense layer,
    per-example R2-G2 has the
    local reparameterisation trick's backward formula while keeping the
    shared-weight forward pass (Lam et al. 2024, Proposition 4.2), at the cost
    of two extra matmuls.

    Inputs of rank > 2 (`[B, ..., D]`, e.g. sequences) are mapped row by row
    with one weight sample per call, like `keras.layers.Dense`; R2-G2 then
    conditions on all of an example's rows (its "positions"), the local
    reparameterisation trick is refused (it would give each row its own
    weights). Inputs are cast to the compute dtype (integers too).

    At inference (`training=False`) the layer draws fresh weights; set
    `inference_mode="mean"` (or the attribute of the same name) to use the
    posterior means instead. `kl_weight` and `inference_mode` are live: set
    after compiling, they take effect in the compiled `fit`/`evaluate`/`predict`
    (`tfp_gradest.layers.settings`; KL annealing: `tge.callbacks.KLAnnealing`).

    Args:
      units: Python or NumPy `int`, output size.
      activation, use_bias: as in `keras.layers.Dense`.
      gradient_estimator: a name, class, instance or config dict of a
        `tfp_gradest.layers.estimators.LayerEstimator` (`tge.layers.estimators.get`);
        `layer.gradient_estimator` is the object, `layer.resolved_gradient_estimator`
        the name of the one used. Default value: `"auto"`.
      kernel_loc_initializer: initializer of `μ`. Default value: `"glorot_uniform"`.
      initial_posterior_scale: initial `σ`. Default value: `1e-2`.
      prior_scale: standard deviation of the Normal prior. Default value: `1.0`.
      kl_weight: finite non-negative factor on the KL term (e.g.
        `1 / num_examples`, so the loss is the per-example negative ELBO), or
        a scalar `keras.Variable` the layer reads (never trains; on TensorFlow also a
        `tf.Variable`; on JAX created with `trainable=False`).
        Default value: `1.0`.
      conditioning, cg_iterations, cg_tolerance, per_example_memory_limit:
        deprecated (0.2): R2-G2's options, now `tge.layers.estimators.R2G2`'s
        (`gradient_estimator=tge.layers.estimators.R2G2(cg_iterations=8)`). Still
        accepted with `"r2g2"` for one release, with a `DeprecationWarning`; a
        `ValueError` with any other estimator, which would ignore them.
      inference_mode: `"sample"` or `"mean"` (any case). Default value: `"sample"`.
      seed: Python `int` for the layer's `SeedGenerator`. Default value: `None`.

    #### Examples

    ```python
    model = keras.Sequential([
        tge.layers.DenseReparameterization(400, activation="relu", kl_weight=1 / n),
        tge.layers.DenseReparameterization(10, kl_weight=1 / n),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = settings.check_positive_int("units", units)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "DenseReparameterization expects inputs of shape (batch, ..., features) with a "
                f"known number of features. Received: input_shape={input_shape}"
            )
        self._build_posterior((input_shape[-1], self.units), self.units)
        self._resolve_gradient_estimator(input_shape)

    def _linear_map(self):
        return DenseMap()

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
