"""Bayesian convolutions for Keras 3: one base class with a `rank`, thin 1-d/2-d/3-d classes."""

import math

import keras
import numpy as np
from keras import ops

from tfp_gradest._util import arguments
from tfp_gradest.layers import estimators as layer_estimators
from tfp_gradest.layers import settings
from tfp_gradest.layers.base import BayesianLayer
from tfp_gradest.r2g2 import ConvolutionMap

__all__ = ["Conv1DReparameterization", "Conv2DReparameterization", "Conv3DReparameterization"]


_PADDINGS = ("valid", "same", "causal")


def _tuple(value, rank, name):
    """A tuple of `rank` Python ints from an int or a sequence (NumPy integers accepted, like
    Keras; floats and strings refused: `tfp_gradest._util.arguments`)."""
    if arguments.is_integer(value):
        return (arguments.check_positive_integer(name, value),) * rank
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = list(value)
    if isinstance(value, (list, tuple)) and len(value) == rank:
        return arguments.check_integer_sequence(name, value)
    if isinstance(value, (list, tuple)):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of {rank}. Received: {name}={value!r} "
            f"(length {len(value)})."
        )
    raise TypeError(
        f"`{name}` must be a positive int or a tuple of {rank}. "
        f"Received: {name}={value!r} ({type(value).__name__})."
    )


class BayesianConv(BayesianLayer):
    """A convolution with a mean-field Normal posterior over its kernel and bias (channels last).

    `gradient_estimator` is `"auto"` (default; RT, the fastest at equal held-out
    result: see `tfp_gradest.layers.estimators.Auto`), `"reparameterization"`,
    `"flipout"` or `"r2g2"`, or an estimator object (`tge.layers.estimators.R2G2(...)`
    with its options). The local reparameterisation trick does not apply: a
    convolution's outputs at different positions share weights, so sampling
    them independently would change the model.

    R2-G2 for convolutions conditions on the pre-activations through the
    im2col patches (`P` output positions, `k = prod(kernel_size) · C_in + 1`
    weights per filter, the bias included). Per-example conditioning solves
    `P × P` systems per example and filter (directly, or by conjugate
    gradients where cheaper: `tfp_gradest.r2g2.solvers`) and holds
    `B × k × F` per-example products; `R2G2(conditioning="whole_batch")` avoids
    that memory, and the backward pass switches to it by itself (with a warning) when
    the products would exceed `R2G2(per_example_memory_limit=...)` bytes. When the
    conditioning rows reach `k` the projection is the identity and R2-G2
    equals the reparameterisation gradient: the solve is skipped, so early
    layers with large outputs cost nothing extra. The gain is in deep layers
    with small spatial outputs.

    Args:
      rank: Python `int`, spatial rank.
      filters: Python `int`.
      kernel_size, strides, dilation_rate: int or tuple of `rank` ints.
      padding: `"valid"`, `"same"` (any case, like Keras), or `"causal"` (1-d
        only: left padding by `dilation_rate · (kernel_size - 1)` then
        `"valid"`, so output `t` sees inputs up to `t`, as in
        `keras.layers.Conv1D`; done on the inputs, so every estimator
        supports it).
      groups: Python `int` dividing the input channels and `filters`, as in
        `keras.layers.Conv`: input channels and filters are split into
        `groups` independent convolutions. The layer runs its estimator once
        per group (each group is an independent Bayesian convolution, so this
        is exact for every estimator, R2-G2 included; the cost grows with
        `groups`). Default value: `1`.
      **kwargs: as for `DenseReparameterization` (estimator, prior, KL weight,
        posterior scale, inference mode, seed).
    """

    layer_kind = "conv"  # which estimators apply (`LayerEstimator.layer_kinds`)

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
        groups=1,
        data_format="channels_last",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if data_format != "channels_last":
            raise ValueError(
                "Only data_format='channels_last' is supported. "
                f"Received: data_format={data_format!r}"
            )
        self.filters = settings.check_positive_int("filters", filters)
        self.groups = settings.check_positive_int("groups", groups)
        if self.filters % self.groups:
            raise ValueError(
                "`filters` must be a multiple of `groups`. "
                f"Received: filters={filters}, groups={groups}"
            )
        normalized = padding.lower() if isinstance(padding, str) else padding
        if normalized not in _PADDINGS or (normalized == "causal" and rank != 1):
            raise ValueError(
                "`padding` must be 'valid' or 'same' (any case), or 'causal' for 1-d "
                f"convolutions. Received: padding={padding!r}"
            )
        self.rank, self.padding = rank, normalized
        self.kernel_size = _tuple(kernel_size, rank, "kernel_size")
        self.strides = _tuple(strides, rank, "strides")
        self.dilation_rate = _tuple(dilation_rate, rank, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 is not supported together with `dilation_rate` > 1 (as in "
                f"keras.layers.Conv). Received: strides={strides}, dilation_rate={dilation_rate}"
            )
        # Causal padding is done on the inputs (`_prepare_inputs`); the map then pads nothing.
        self._map = ConvolutionMap(
            rank,
            self.kernel_size,
            self.strides,
            "valid" if normalized == "causal" else normalized,
            self.dilation_rate,
        )

    def build(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank {self.rank + 2}. "
                f"Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"{type(self).__name__}: the input channels must be known and a multiple of "
                f"groups={self.groups}. Received: input_shape={input_shape}"
            )
        if self.padding == "valid":
            for size, k, d in zip(input_shape[1:-1], self.kernel_size, self.dilation_rate):
                if size is not None and size < d * (k - 1) + 1:
                    raise ValueError(
                        f"{type(self).__name__}: the input is smaller than the (dilated) "
                        "kernel, so "
                        "padding='valid' leaves no output. Use a smaller kernel_size, or "
                        "padding='same'. Received: input_shape="
                        f"{input_shape}, kernel_size={self.kernel_size}, "
                        f"dilation_rate={self.dilation_rate}"
                    )
        kernel_shape = (*self.kernel_size, channels // self.groups, self.filters)
        self._build_posterior(kernel_shape, self.filters)
        self._resolve_gradient_estimator(input_shape)

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        if self.padding != "causal":
            return inputs
        left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
        return ops.pad(inputs, [[0, 0], [left, 0], [0, 0]])

    def _sample_outputs(self, inputs, linear_map, kernel_loc, bias_loc):
        if self.groups == 1:
            return super()._sample_outputs(inputs, linear_map, kernel_loc, bias_loc)
        # A grouped convolution is `groups` independent convolutions with independent
        # weights: sampling each with the layer's estimator is exact for every estimator.
        kernel_scale, bias_scale = self.posterior_scales()
        inputs_per_group = ops.split(inputs, self.groups, axis=-1)
        filters = self.filters // self.groups
        outputs = []
        for g, group_inputs in enumerate(inputs_per_group):
            part = slice(g * filters, (g + 1) * filters)
            posterior = layer_estimators.Posterior(
                kernel_loc[..., part],
                kernel_scale[..., part],
                *((bias_loc[part], bias_scale[part]) if self.use_bias else ()),
            )
            outputs.append(self._estimator_sample(group_inputs, linear_map, posterior))
        return ops.concatenate(outputs, axis=-1)

    def _linear_map(self):
        return self._map

    def compute_output_shape(self, input_shape):
        spatial = []
        for size, k, s, d in zip(
            input_shape[1:-1], self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                spatial.append(None)
            elif self.padding in ("same", "causal"):
                spatial.append(math.ceil(size / s))
            else:
                spatial.append((size - d * (k - 1) - 1) // s + 1)
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="tfp_gradest")
class Conv1DReparameterization(BayesianConv):
    """1-d Bayesian convolution; see `BayesianConv`."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(1, filters, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="tfp_gradest")
class Conv2DReparameterization(BayesianConv):
    """2-d Bayesian convolution; see `BayesianConv`."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(2, filters, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="tfp_gradest")
class Conv3DReparameterization(BayesianConv):
    """3-d Bayesian convolution; see `BayesianConv`."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(3, filters, kernel_size, **kwargs)
