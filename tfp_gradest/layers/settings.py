"""Layer settings that compiled functions read live (`kl_weight`, `inference_mode`), and argument
checks.

Keras traces `fit`, `evaluate` and `predict` once. A Python attribute read
while tracing is frozen into the compiled function, so changing it afterwards
silently does nothing. The two settings users change during or after training
are therefore held in variables that every compiled function reads:

* `KLWeight`: the factor on the layer's KL term, a float32 scalar variable
  (the layer's own, or one the caller passed). `layer.kl_weight = 0.5` assigns
  it; KL annealing (`tge.callbacks.KLAnnealing`) is one assignment per epoch.
* `InferenceMode`: `"sample"` or `"mean"` as a boolean variable, read with
  `keras.ops.cond` when the layer is called with `training` false, so
  `layer.inference_mode = "mean"` takes effect in an already compiled
  `predict`/`evaluate` (XLA compiles both branches; only one runs).

Neither variable is a Keras weight: the layer's `get_config()` carries the
current value as a plain Python value, and saved weight files keep their
layout. Both are in the layer's `variables` (its state besides the weights, like
its `SeedGenerator`'s), which is what JAX's stateless training passes into the
compiled step: a variable outside it would be a constant frozen at tracing there.
"""

import math
import numbers

import keras
import numpy as np

from tfp_gradest import _backend
from tfp_gradest._util import arguments

__all__ = [
    "INFERENCE_MODES",
    "InferenceMode",
    "KLWeight",
    "check_positive_finite",
    "check_positive_int",
]

INFERENCE_MODES = ("sample", "mean")


def _is_variable(value):
    return isinstance(value, (keras.Variable, *_backend.native_variables()))


def _is_floating(dtype):
    return keras.backend.standardize_dtype(dtype).startswith(("float", "bfloat"))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


# The layers' argument checks are the package's one module's (re-exported under the names the
# layers have always used).
check_positive_int = arguments.check_positive_integer
check_positive_finite = arguments.check_positive_finite


def _check_kl_number(value):
    if not _is_number(value):
        raise TypeError(
            "`kl_weight` must be a non-negative float or a scalar float Variable (for KL "
            f"annealing). Received: kl_weight={value!r} of type {type(value).__name__}"
        )
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"`kl_weight` must be finite and non-negative. Received: kl_weight={value!r}"
        )
    return float(value)


class KLWeight:
    """The factor on a layer's KL term, held in a scalar variable read by compiled functions.

    A number gives the layer its own non-trainable float32 `keras.Variable`;
    setting a number later assigns it. A `keras.Variable` (or, on TensorFlow, a
    `tf.Variable`) passed by the caller is read directly (not tracked as a layer
    weight, so never trained), so the caller's `v.assign(...)` takes effect too;
    a number set later is assigned to that variable. On JAX a compiled step sees
    only variables passed in as state, so there the caller's variable must be a
    non-trainable `keras.Variable` (the layer lists it in its `variables`).
    """

    def __init__(self, value):
        self._variable, self._owned, self._number = None, False, None
        self.set(value, built=False)

    def set(self, value, built):
        if _is_variable(value):
            if built and value is not self._variable:
                raise ValueError(
                    "`kl_weight` cannot be replaced by a new Variable once the layer is built: "
                    "functions compiled earlier would keep reading the old one. Assign a number "
                    "instead (`layer.kl_weight = 0.5`), or pass the Variable when constructing "
                    f"the layer. Received: kl_weight={value!r}"
                )
            if len(value.shape) != 0 or not _is_floating(value.dtype):
                raise ValueError(
                    "`kl_weight` as a Variable must be a floating-point scalar. "
                    f"Received: a Variable of shape {value.shape} and dtype {value.dtype}"
                )
            if _backend.current().STATELESS_TRAINING and (
                not isinstance(value, keras.Variable) or value.trainable
            ):
                raise ValueError(
                    f"On the {keras.backend.backend()} backend, `kl_weight` as a Variable must "
                    "be a non-trainable keras.Variable: compiled steps there see only the "
                    "variables passed in as state. Use keras.Variable(value, trainable=False). "
                    f"Received: kl_weight={value!r}"
                )
            if not _backend.in_traced_function():
                _check_kl_number(float(keras.ops.convert_to_numpy(value)))
            self._variable, self._owned, self._number = value, False, None
            return
        if (
            keras.ops.is_tensor(value)
            and not _backend.in_traced_function()
            and len(value.shape) == 0
        ):
            value = float(keras.ops.convert_to_numpy(value))
        number = _check_kl_number(value)
        if self._variable is None:
            self._variable = keras.Variable(
                number, trainable=False, dtype="float32", name="kl_weight"
            )
            self._owned = True
        else:
            self._variable.assign(keras.ops.cast(number, self._variable.dtype))
        # The exact number, so that `get_config()` returns what was set (not its float32 image).
        self._number = number if self._owned else None

    @property
    def variable(self):
        return self._variable

    def value(self):
        """The current value as a Python float (eagerly), exactly the number last set if any."""
        if self._number is not None:
            return self._number
        return float(keras.ops.convert_to_numpy(self._variable))

    def state(self):
        """The variable to list in the layer's `variables` (a `keras.Variable` never trained),
        or `None`."""
        variable = self._variable
        if isinstance(variable, keras.Variable) and not variable.trainable:
            return variable
        return None

    def read(self, dtype):
        """The current value as a Tensor of `dtype`, read when the compiled function runs."""
        return keras.ops.cast(self._variable, dtype)


class InferenceMode:
    """`"sample"` or `"mean"` (case-insensitive, stored lower-case), mirrored in a
    boolean variable."""

    def __init__(self, value):
        self._is_mean = None
        self.set(value)

    def set(self, value):
        if not isinstance(value, str):
            raise TypeError(
                f"`inference_mode` must be one of {INFERENCE_MODES} (a string). "
                f"Received: inference_mode={value!r} of type {type(value).__name__}"
            )
        if value.lower() not in INFERENCE_MODES:
            raise ValueError(
                f"`inference_mode` must be one of {INFERENCE_MODES} (any case). "
                f"Received: inference_mode={value!r}"
            )
        self.name = value.lower()
        is_mean = self.name == "mean"
        if self._is_mean is None:
            self._is_mean = keras.Variable(
                is_mean, trainable=False, dtype="bool", name="inference_mode_is_mean"
            )
        else:
            self._is_mean.assign(is_mean)

    def state(self):
        """The variable to list in the layer's `variables`."""
        return self._is_mean

    def is_mean(self):
        """A boolean Tensor, read when the compiled function runs."""
        # A cast, not `convert_to_tensor`, which returns the Variable itself on TensorFlow.
        return keras.ops.cast(self._is_mean, "bool")
