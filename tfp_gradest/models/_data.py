"""Checking, once per `fit`/`evaluate` call, that the data are values the likelihood can have.

A Bernoulli likelihood evaluated at `x = 255` (raw pixels) or `x = 5.0` is not a
density: the "bound" it gives is meaningless (a VAE on raw uint8 pixels reached a
loss of -3784). The check runs on the host before Keras's loop, on the arrays
given to `fit`/`evaluate`/`train_on_batch`/`test_on_batch` (and `fit`'s
`validation_data`), so the compiled step is unchanged: one pass over the data per
call, no per-step synchronisation.

In-memory data are NumPy arrays, lists of numbers, and eager backend arrays (an eager
TensorFlow Tensor, a concrete JAX array), whichever the Keras backend. A
`tf.data.Dataset`, a generator or a `keras.utils.PyDataset` is not checked:
reading it here would mean running its pipeline once more (or a check inside the
compiled step, synchronising every step). Check such data where it is made.
"""

import inspect
import sys

import keras
import numpy as np

__all__ = ["BernoulliDataChecks", "check_bernoulli_data"]


def _host_extrema(x):
    """`(min, max, dtype name)` of an in-memory array or eager Tensor; `None` for anything
    else (datasets, generators, symbolic tensors)."""
    if isinstance(x, (np.ndarray, np.generic)):
        array = x
    elif isinstance(x, (list, tuple)) and x and all(isinstance(v, (int, float)) for v in x):
        array = np.asarray(x)
    else:
        # Either framework's arrays, whichever the Keras backend, without importing either:
        # a user's arrays come from a framework already imported.
        return _tensorflow_extrema(x) or _jax_extrema(x)
    if array.dtype.kind == "b" or array.size == 0:
        return None
    if array.dtype.kind not in "iuf":
        return None  # Keras will refuse it with its own message
    return float(np.min(array)), float(np.max(array)), array.dtype.name


def _tensorflow_extrema(x):
    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.is_tensor(x) or isinstance(x, tf.SparseTensor):
        return None
    if not (tf.executing_eagerly() and hasattr(x, "numpy")) or x.dtype.is_bool:
        return None  # symbolic (or boolean: always in [0, 1])
    return float(tf.reduce_min(x)), float(tf.reduce_max(x)), x.dtype.name


def _jax_extrema(x):
    jax = sys.modules.get("jax")
    if jax is None or not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return None
    if x.dtype.kind not in "iuf" or x.size == 0:
        return None  # boolean, empty, or a dtype Keras refuses with its own message
    return float(x.min()), float(x.max()), x.dtype.name


def check_bernoulli_data(x, name="x"):
    """Raises a `ValueError` naming `name` when an in-memory `x` has values outside [0, 1]
    (or NaN). Datasets and generators pass unchecked (module docstring)."""
    extrema = _host_extrema(x)
    if extrema is None:
        return
    low, high, dtype = extrema
    if low >= 0 and high <= 1:  # NaN fails both comparisons
        return
    if dtype == "uint8" or high > 1 and high <= 255 and float(high).is_integer():
        advice = "Scale raw pixels to [0, 1] (e.g. x / 255) or binarise them (x > 127)"
    else:
        advice = "Scale the data to [0, 1] or binarise it"
    raise ValueError(
        f"`{name}` must hold values in [0, 1] for a Bernoulli likelihood (binary data, or "
        f"probabilities of a pixel being on). Received: {name} with values in "
        f"[{low:g}, {high:g}] (dtype {dtype}). {advice}."
    )


def _validation_x(validation_data):
    if isinstance(validation_data, (tuple, list)) and validation_data:
        return validation_data[0]
    return validation_data


class BernoulliDataChecks:
    """Mixin for a `keras.Model` subclass: checks `x` with `check_bernoulli_data` at the start
    of `fit`, `evaluate`, `train_on_batch` and `test_on_batch` when
    `self._checks_bernoulli_data()` is true."""

    def _checks_bernoulli_data(self):
        return True

    def _check_call_data(self, method, args, kwargs):
        if not self._checks_bernoulli_data():
            return
        try:
            arguments = (
                inspect.signature(getattr(keras.Model, method))
                .bind(self, *args, **kwargs)
                .arguments
            )
        except TypeError:
            return  # a call Keras itself will refuse, with its own message
        check_bernoulli_data(arguments.get("x"), "x")
        if "validation_data" in arguments:
            check_bernoulli_data(_validation_x(arguments["validation_data"]), "validation_data")

    def fit(self, *args, **kwargs):
        self._check_call_data("fit", args, kwargs)
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        # `fit` evaluates its `validation_data` after every epoch through `evaluate`, passing
        # Keras's `_use_cached_eval_dataset=True`; `fit` has checked that data already.
        # (Should Keras rename the keyword, the data are merely checked again: still safe.)
        if not kwargs.get("_use_cached_eval_dataset", False):
            self._check_call_data("evaluate", args, kwargs)
        return super().evaluate(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._check_call_data("train_on_batch", args, kwargs)
        return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        self._check_call_data("test_on_batch", args, kwargs)
        return super().test_on_batch(*args, **kwargs)
