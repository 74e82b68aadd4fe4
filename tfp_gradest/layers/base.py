"""Shared machinery of the Bayesian layers: a mean-field Normal posterior over the weights, its
KL, noise."""

import inspect
import warnings

import keras
import numpy as np
from keras import ops

from tfp_gradest import _backend
from tfp_gradest._util import arguments
from tfp_gradest.layers import estimators as layer_estimators
from tfp_gradest.layers import settings

__all__ = ["BayesianLayer", "GRADIENT_ESTIMATORS"]

# The package's layer gradient estimators by name, as registered at import; estimators
# registered later are in `tfp_gradest.layers.estimators.names()`.
GRADIENT_ESTIMATORS = layer_estimators.names()

# 0.2's layer arguments that were R2-G2's options; now `tge.layers.estimators.R2G2`'s.
R2G2_LAYER_ARGUMENTS = ("conditioning", "cg_iterations", "cg_tolerance", "per_example_memory_limit")


def _r2g2_options(legacy):
    """`R2G2` arguments from 0.2's layer arguments: the layer's `per_example_memory_limit`
    budgeted both the per-example products and the direct solve."""
    options = dict(legacy)
    if "per_example_memory_limit" in options:
        options["direct_solve_memory_limit"] = options["per_example_memory_limit"]
    return options


def _fold_r2g2_arguments(estimator, legacy, layer_name):
    """`estimator` with 0.2's layer arguments `legacy` applied if it is an `R2G2`, else
    unchanged (0.2 ignored them too). `_warn_r2g2_arguments` tells the user."""
    if not isinstance(estimator, layer_estimators.R2G2):
        return estimator
    # An option the estimator object sets itself (away from its default) is not silently
    # replaced: a legacy argument contradicting it is an error, and the estimator's own
    # `direct_solve_memory_limit` wins over the one 0.2's `per_example_memory_limit` implies.
    config, defaults = estimator.get_config(), layer_estimators.R2G2().get_config()
    chosen = {name: value for name, value in config.items() if value != defaults.get(name)}
    clashes = [name for name in legacy if name in chosen and chosen[name] != legacy[name]]
    if clashes:
        raise ValueError(
            f"{layer_name}: {', '.join(f'`{name}`' for name in clashes)} given twice, with "
            f"different values, as a deprecated layer argument and as an option of "
            f"gradient_estimator. Pass it on the estimator only. Received: "
            f"gradient_estimator={estimator!r}, "
            + ", ".join(f"{name}={legacy[name]!r}" for name in clashes)
        )
    options = _r2g2_options(legacy)
    if "direct_solve_memory_limit" in chosen:
        options.pop("direct_solve_memory_limit", None)
    return type(estimator)(**{**config, **options})


def _warn_r2g2_arguments(estimator, legacy, layer_name):
    """The `DeprecationWarning` for 0.2's R2-G2 layer arguments `legacy`, now folded into
    `estimator`: what to write instead, or (for another estimator) that they are ignored."""
    given = ", ".join(f"{name}={value!r}" for name, value in legacy.items())
    if isinstance(estimator, layer_estimators.R2G2):
        message = (
            f"{layer_name}({given}) is deprecated: R2-G2's options are the estimator's. Write "
            f"{layer_name}(..., gradient_estimator=tge.layers.estimators.{estimator!r}) instead."
        )
    else:
        them = "it" if len(legacy) == 1 else "them"
        message = (
            f"{layer_name}({given}) is deprecated, and ignored here: "
            f"{'it is an option' if len(legacy) == 1 else 'they are options'} of the R2-G2 "
            f"estimator, which this layer does not use (gradient_estimator={estimator.name!r})."
            f" Remove {them}, or use R2-G2 with {them}: "
            f"gradient_estimator=tge.layers.estimators.R2G2({given}). From the next release "
            "this is an error."
        )
    warnings.warn(message, DeprecationWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel():
    """The `stacklevel` that attributes a warning raised by the calling function to the first
    frame outside `tfp_gradest.layers` (the user's code), however many of the package's
    `__init__`s (`Conv2DReparameterization` -> `BayesianConv` -> `BayesianLayer`, or
    `bayesian_mlp`) lie between. A fixed level would name a file of the package for some
    layers, where Python's default filters hide `DeprecationWarning`s."""
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(__package__):
        frame, level = frame.f_back, level + 1
    return level


class _LayerNoise(layer_estimators.NoiseSource):
    """The layer's noise source; keeps the layer for estimators written for 0.2's
    `sample(layer, ...)` (deprecated)."""

    def __init__(self, layer):
        super().__init__(layer._seed)
        self._layer = layer


def _inverse_softplus(x):
    return float(np.log(np.expm1(x)))


def normal_kl(loc, scale, prior_scale):
    """`KL(N(loc, scale²) || N(0, prior_scale²))` elementwise, in TFP's numerically stable form.

    ```none
    KL = ½ (loc / s)² + ½ expm1(2 d) - d,      d = log(scale) - log(s),   s = prior_scale
    ```
    (`tfp.distributions.kl_divergence` of two Normals, written in `keras.ops`.)
    """
    log_ratio = ops.log(scale) - ops.log(prior_scale)
    return 0.5 * ops.square(loc / prior_scale) + 0.5 * ops.expm1(2.0 * log_ratio) - log_ratio


class BayesianLayer(keras.layers.Layer):
    """Base of the Bayesian layers: `q(W) = N(μ, diag σ²)`, `σ = softplus(ρ)`, prior `N(0, s²)`.

    Subclasses supply the linear map (`_linear_map`) and the shapes; this class
    owns the variables, the KL term (added with `add_loss`, analytic, times
    `kl_weight`), the noise (from a `keras.random.SeedGenerator`), and the
    gradient estimator: one object from `tfp_gradest.layers.estimators`
    (reparameterisation, local reparameterisation, Flipout, R2-G2, ...) that
    samples the pre-activations; the layer exposes the one it uses as
    `resolved_gradient_estimator` once built.
    """

    layer_kind = "dense"  # which estimators apply (`LayerEstimator.layer_kinds`)

    def __init__(
        self,
        activation=None,
        use_bias=True,
        gradient_estimator="auto",
        kernel_loc_initializer="glorot_uniform",
        initial_posterior_scale=1e-2,
        prior_scale=1.0,
        kl_weight=1.0,
        inference_mode="sample",
        seed=None,
        **kwargs,
    ):
        legacy = {name: kwargs.pop(name) for name in R2G2_LAYER_ARGUMENTS if name in kwargs}
        super().__init__(**kwargs)
        layer_name = type(self).__name__
        _backend.check_supported(layer_name)
        estimator = layer_estimators.get(gradient_estimator)
        if legacy:
            estimator = _fold_r2g2_arguments(estimator, legacy, layer_name)
            _warn_r2g2_arguments(estimator, legacy, layer_name)
        estimator.check(self.layer_kind, layer_name=layer_name)
        self._estimator = estimator
        # As given when it was a name ("auto" stays "auto"), else the registry's config dict.
        self._estimator_config = (
            estimator.name
            if isinstance(gradient_estimator, str) and not legacy
            else layer_estimators.serialize(estimator)
        )
        self._resolved_estimator = None
        self._noise_source = _LayerNoise(self)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        # A fresh initializer per layer, even when the caller passed one instance to several layers.
        self.kernel_loc_initializer = keras.initializers.get(
            keras.initializers.serialize(keras.initializers.get(kernel_loc_initializer))
        )
        self.initial_posterior_scale = settings.check_positive_finite(
            "initial_posterior_scale", initial_posterior_scale
        )
        self.prior_scale = settings.check_positive_finite("prior_scale", prior_scale)
        self.kl_weight = kl_weight
        self.inference_mode = inference_mode
        self.seed = arguments.check_seed("seed", seed)  # NumPy integers too (Keras refuses them)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self._replay_seeds(None)

    # --- live settings (read by compiled functions; `tfp_gradest.layers.settings`) -----

    def __setattr__(self, name, value):
        if name in ("kl_weight", "inference_mode", "_replayed_seeds"):
            # Straight to the property: Keras would otherwise track a Variable passed as
            # `kl_weight` as a (trainable) weight of this layer.
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def kl_weight(self):
        """Factor on the KL term; assigning it (a number) takes effect in compiled functions.

        Set at construction to a number or to a scalar `keras.Variable` (on
        TensorFlow also a `tf.Variable`; on JAX a non-trainable one), read directly,
        so assigning that variable works too. For KL annealing see
        `tge.callbacks.KLAnnealing`. Reads as a Python float; inside a compiled
        function (`tf.function`, `jax.jit`), as a Tensor (of the variables' dtype)
        read when the function runs, so that a custom train step using it does not
        freeze its value at tracing time.
        """
        if _backend.in_traced_function():
            return self._kl_weight.read(self.variable_dtype)
        return self._kl_weight.value()

    @kl_weight.setter
    def kl_weight(self, value):
        if "_kl_weight" in self.__dict__:
            self._kl_weight.set(value, built=self.built)
        else:
            self._kl_weight = settings.KLWeight(value)

    @property
    def inference_mode(self):
        """`"sample"` or `"mean"` (set in any case); applies to calls with `training` false.

        Held in a boolean variable read with `keras.ops.cond`, so a change takes effect
        in an already compiled `predict`/`evaluate`.
        """
        return self._inference_mode.name

    @inference_mode.setter
    def inference_mode(self, value):
        if "_inference_mode" in self.__dict__:
            self._inference_mode.set(value)
        else:
            self._inference_mode = settings.InferenceMode(value)

    @property
    def variables(self):
        """The layer's state: its weights, its `SeedGenerator`'s state, and the live
        settings' variables.

        The settings' variables are not weights (saved weight files keep their
        layout), but they are state that compiled functions read: listing them here
        is what passes them into JAX's stateless training step, as Keras does for
        seed states.
        """
        variables = super().variables
        seen = {id(v) for v in variables}
        settings_ = [self.__dict__.get(name) for name in ("_kl_weight", "_inference_mode")]
        for setting in filter(None, settings_):  # absent while `__init__` runs
            state = setting.state()
            if state is not None and id(state) not in seen:
                variables.append(state)
                seen.add(id(state))
        return variables

    # --- variables -------------------------------------------------------------------

    def _build_posterior(self, kernel_shape, units):
        # `autocast=False`: under a mixed-precision policy the variables stay float32 when
        # read, so the KL is computed in float32 from unrounded parameters; the forward
        # pass casts them to the compute dtype itself (`call`, `posterior_scales`).
        raw = keras.initializers.Constant(_inverse_softplus(self.initial_posterior_scale))
        self.kernel_loc = self.add_weight(
            name="kernel_loc",
            shape=kernel_shape,
            initializer=self.kernel_loc_initializer,
            autocast=False,
        )
        self.kernel_scale_raw = self.add_weight(
            name="kernel_scale_raw", shape=kernel_shape, initializer=raw, autocast=False
        )
        if self.use_bias:
            self.bias_loc = self.add_weight(
                name="bias_loc", shape=(units,), initializer="zeros", autocast=False
            )
            self.bias_scale_raw = self.add_weight(
                name="bias_scale_raw", shape=(units,), initializer=raw, autocast=False
            )

    def posterior_scales(self, dtype=None):
        """`(σ_kernel, σ_bias or None)`, computed in the variables' dtype, returned in `dtype`.

        `dtype` defaults to the layer's compute dtype (float16/bfloat16 under a
        mixed-precision policy).
        """
        dtype = dtype or self.compute_dtype
        kernel = ops.cast(ops.softplus(self.kernel_scale_raw), dtype)
        bias = ops.cast(ops.softplus(self.bias_scale_raw), dtype) if self.use_bias else None
        return kernel, bias

    def kl_divergence(self):
        """`KL(q || prior)` summed over all weights (analytic, Normal-Normal), in the variables'
        dtype."""
        dtype = self.variable_dtype
        kernel_scale, bias_scale = self.posterior_scales(dtype)
        prior_scale = ops.convert_to_tensor(self.prior_scale, dtype)
        loc = ops.convert_to_tensor(self.kernel_loc)
        kl = ops.sum(normal_kl(loc, kernel_scale, prior_scale))
        if self.use_bias:
            loc = ops.convert_to_tensor(self.bias_loc)
            kl = kl + ops.sum(normal_kl(loc, bias_scale, prior_scale))
        return kl

    # --- forward ---------------------------------------------------------------------

    # The seed state is the layer's Keras SeedGenerator; the draws are each backend's fast
    # stateless generator (`tfp_gradest._backend`: TF's Philox, JAX's Threefry; on TF under
    # XLA, keras.random.normal is 28x to 500x slower, see `_backend/tensorflow.py`).

    def _seed(self):
        """The next seed: `seed_generator.next()`, or its replay inside the inference branch."""
        if self._replayed_seeds is None:
            return self.seed_generator.next()
        # Inside `keras.ops.cond` a branch must not assign variables (JAX would leak its
        # traced values), so `call` reads the state before the branch and this returns what
        # `next()` would: the state plus [0, i] at the i-th draw; `call` advances it after.
        state, draws = self._replayed_seeds
        self._replay_seeds((state, draws + 1))
        return state + ops.convert_to_tensor([0, draws], state.dtype)

    def _replay_seeds(self, replay):
        """`None`, or `(state, draws)`: the seed state read before the inference branch and the
        number of seeds drawn in it so far."""
        self._replayed_seeds = replay

    # 0.2's private noise methods, kept for estimators written for `sample(layer, ...)`.
    def _noise(self, shape, dtype, per_example=False):
        return self._noise_source.normal(shape, dtype, per_example)

    def _random_signs(self, shape, dtype, per_example=False):
        return self._noise_source.random_signs(shape, dtype, per_example)

    def _prepare_inputs(self, inputs):
        """The inputs in the compute dtype (integers and other floats cast, like Keras's
        `Dense`)."""
        inputs = ops.convert_to_tensor(inputs)
        if keras.backend.standardize_dtype(inputs.dtype) == self.compute_dtype:
            return inputs
        return ops.cast(inputs, self.compute_dtype)

    def call(self, inputs, training=None):
        inputs = self._prepare_inputs(inputs)
        linear_map = self._linear_map()
        kernel_loc = ops.cast(self.kernel_loc, self.compute_dtype)
        bias_loc = ops.cast(self.bias_loc, self.compute_dtype) if self.use_bias else None
        kl = self.kl_divergence()
        self.add_loss(self._kl_weight.read(kl.dtype) * kl)

        def mean_outputs():
            outputs = linear_map.apply(inputs, kernel_loc)
            return outputs + bias_loc if self.use_bias else outputs

        def sampled_outputs():
            return self._sample_outputs(inputs, linear_map, kernel_loc, bias_loc)

        if training:
            outputs = sampled_outputs()
        else:
            # Read when the compiled function runs, so `layer.inference_mode = ...` is live.
            outputs = self._inference_outputs(mean_outputs, sampled_outputs)
        return self.activation(outputs) if self.activation is not None else outputs

    def _inference_outputs(self, mean_outputs, sampled_outputs):
        """`cond(is_mean, mean_outputs, sampled_outputs)`, advancing the seed state outside it.

        The sampling branch replays the seeds `next()` would give (`_seed`), so the
        draws and the seed state afterwards are those of calling it directly.
        """
        is_mean = self._inference_mode.is_mean()
        # A copy read now (`convert_to_tensor` would return the Variable itself on TensorFlow).
        state = ops.cast(self.seed_generator.state, self.seed_generator.state.dtype)
        self._replay_seeds((state, 0))
        try:
            outputs = ops.cond(is_mean, mean_outputs, sampled_outputs)
            draws = self._replayed_seeds[1]  # 0 if eager TensorFlow ran only the mean branch
        finally:
            self._replay_seeds(None)
        if draws:
            step = ops.convert_to_tensor([0, draws], state.dtype)
            self.seed_generator.state.assign(state + ops.where(is_mean, ops.zeros_like(step), step))
        return outputs

    def _sample_outputs(self, inputs, linear_map, kernel_loc, bias_loc):
        kernel_scale, bias_scale = self.posterior_scales()
        posterior = layer_estimators.Posterior(kernel_loc, kernel_scale, bias_loc, bias_scale)
        return self._estimator_sample(inputs, linear_map, posterior)

    def _estimator_sample(self, inputs, linear_map, posterior):
        if self._resolved_estimator is None:  # called without `build` (e.g. a subclass's own)
            self._resolve_gradient_estimator(inputs.shape)
        return self._resolved_estimator.sample(inputs, linear_map, posterior, self._noise_source)

    # --- gradient estimator ------------------------------------------------------------

    def _resolve_gradient_estimator(self, input_shape):
        """Fixes the estimator from static shapes (`"auto"` picks one) after checking that it
        applies to them; called by `build`."""
        input_shape = tuple(input_shape)
        self._estimator.check(self.layer_kind, input_shape, type(self).__name__)
        resolved = self._estimator.resolve(self, input_shape)
        resolved.check(self.layer_kind, input_shape, type(self).__name__)
        self._resolved_estimator = resolved

    @property
    def gradient_estimator(self):
        """The `tge.layers.estimators.LayerEstimator` given (`Auto` for `"auto"`), holding its
        options (`layer.gradient_estimator.cg_iterations`)."""
        return self._estimator

    @property
    def resolved_gradient_estimator(self):
        """The name of the estimator this layer uses (what `"auto"` resolved to); `None` before
        build."""
        resolved = self._resolved_estimator
        return None if resolved is None else resolved.name

    def get_config(self):
        config = {
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "gradient_estimator": self._estimator_config,
            "kernel_loc_initializer": keras.initializers.serialize(self.kernel_loc_initializer),
            "initial_posterior_scale": self.initial_posterior_scale,
            "prior_scale": self.prior_scale,
            "kl_weight": self.kl_weight,
            "inference_mode": self.inference_mode,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}

    def __getattr__(self, name):
        # 0.2's layer attributes for R2-G2's options, deprecated. (`__getattr__`, not
        # properties: Keras's saving walks `dir(layer)`, which would warn on every save.)
        if name in R2G2_LAYER_ARGUMENTS:
            warnings.warn(
                f"layer.{name} is deprecated: R2-G2's options are the estimator's; read "
                f"layer.gradient_estimator.{name} (None when the layer does not use R2-G2).",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(self.__dict__.get("_estimator"), name, None)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_config(cls, config):
        """Also loads 0.2's configs (`.keras` files), which wrote R2-G2's options as layer
        arguments for every estimator: for R2-G2 they become the estimator's options, for
        the others they are dropped (0.2 ignored them too). No warning: re-saving writes the
        new form."""
        config = dict(config)
        legacy = {name: config.pop(name) for name in R2G2_LAYER_ARGUMENTS if name in config}
        identifier = config.get("gradient_estimator", "auto")
        if legacy and isinstance(layer_estimators.get(identifier), layer_estimators.R2G2):
            estimator = _fold_r2g2_arguments(layer_estimators.get(identifier), legacy, cls.__name__)
            if estimator != layer_estimators.get(identifier):
                config["gradient_estimator"] = layer_estimators.serialize(estimator)
        return super().from_config(config)
