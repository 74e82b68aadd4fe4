"""Bayesian convolutions for Keras 3: one base class with a `rank`, thin 1-d/2-d/3-d classes."""

import math

import keras

from tfp_gradest.layers.base import BayesianLayer
from tfp_gradest.r2g2 import ConvolutionMap

__all__ = ["Conv1DReparameterization", "Conv2DReparameterization", "Conv3DReparameterization"]


def _tuple(value, rank, name):
    value = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(value) != rank or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of {rank}. Received: {name}={value!r}"
        )
    return value


class BayesianConv(BayesianLayer):
    """A convolution with a mean-field Normal posterior over its kernel and bias (channels last).

    `gradient_estimator` is `"reparameterization"`, `"flipout"` or `"r2g2"`
    (default). The local reparameterisation trick does not apply: a
    convolution's outputs at different positions share weights, so sampling
    them independently would change the model.

    R2-G2 for convolutions conditions on the pre-activations through the
    im2col patches (`P` output positions, `k = prod(kernel_size) · C_in + 1`
    weights per filter, the bias included). Per-example conditioning solves
    `P × P` systems per example and filter by conjugate gradients and holds
    `B × k × F` per-example products; `conditioning="whole_batch"` avoids that
    memory, and the layer switches to it by itself (with a warning) when the
    products would exceed `per_example_memory_limit` bytes. When the
    conditioning rows reach `k` the projection is the identity and R2-G2
    equals the reparameterisation gradient: the solve is skipped, so early layers with large outputs cost nothing extra. The gain is in deep
    layers with small spatial outputs.

    Args:
      rank: Python `int`, spatial rank.
      filters: Python `int`.
      kernel_size, strides, dilation_rate: int or tuple of `rank` ints.
      padding: `"valid"` or `"same"`.
      **kwargs: as for `DenseReparameterization` (estimator, prior, KL weight,
        posterior scale, conditioning and solver, inference mode, seed).
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
        data_format="channels_last",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if data_format != "channels_last":
            raise ValueError(
                f"Only data_format='channels_last' is supported. Received: data_format={data_format!r}"
            )
        if not (isinstance(filters, int) and filters > 0):
            raise ValueError(f"`filters` must be a positive integer. Received: filters={filters!r}")
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'. Received: padding={padding!r}")
        self.rank, self.filters, self.padding = rank, filters, padding
        self.kernel_size = _tuple(kernel_size, rank, "kernel_size")
        self.strides = _tuple(strides, rank, "strides")
        self.dilation_rate = _tuple(dilation_rate, rank, "dilation_rate")
        self._map = ConvolutionMap(
            rank, self.kernel_size, self.strides, padding, self.dilation_rate
        )

    def build(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank {self.rank + 2}. Received: input_shape={input_shape}"
            )
        self._build_posterior((*self.kernel_size, input_shape[-1], self.filters), self.filters)
        self._resolve_gradient_estimator(input_shape)

    def _linear_map(self):
        return self._map

    def compute_output_shape(self, input_shape):
        spatial = []
        for size, k, s, d in zip(
            input_shape[1:-1], self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
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
