"""One place that turns a user's seed into a TFP stateless seed."""

import numbers

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["sanitize_seed"]

_ACCEPTED = (
    "`seed` must be None, a Python int, a pair of ints, or an integer Tensor of shape [2] "
    "(a TFP stateless seed, e.g. from `tfp.random.split_seed`)."
)


def sanitize_seed(seed):
    """Returns a stateless seed (int32 Tensor of shape `[2]`) for `seed`.

    A Python `int` maps to the same stateless seed every time. (Passing an int to
    `tfp.random.sanitize_seed` draws it statefully, so two eager calls with
    `seed=7` would differ.) `None` gives a fresh random seed; a pair or a
    Tensor is passed to `tfp.random.sanitize_seed` unchanged.

    Raises:
      TypeError: naming `seed`, for anything else (a string, a float, a bool,
        a sequence that is not two integers).
    """
    if seed is None:
        return tfp.random.sanitize_seed(None)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        seed = int(seed) % (1 << 62)
        seed = np.array([seed >> 31, seed & 0x7FFFFFFF], dtype=np.int32)
    _check_stateless(seed)
    return tfp.random.sanitize_seed(seed)


def _check_stateless(seed):
    """Raises a `TypeError` naming `seed` unless it is (statically) two integers."""
    if tf.is_tensor(seed):
        dtype, shape = seed.dtype, seed.shape
    else:
        if isinstance(seed, (str, bytes, bool, np.bool_, numbers.Real)):
            raise TypeError(f"{_ACCEPTED} Received: seed={seed!r}")
        try:
            array = np.asarray(seed)
        except (TypeError, ValueError):
            raise TypeError(f"{_ACCEPTED} Received: seed={seed!r}") from None
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"{_ACCEPTED} Received: seed={seed!r}")
        dtype, shape = tf.as_dtype(array.dtype), array.shape
    if not dtype.is_integer:
        raise TypeError(f"{_ACCEPTED} Received: seed={seed!r}")
    if tf.TensorShape(shape).is_fully_defined() and tuple(tf.TensorShape(shape)) != (2,):
        raise TypeError(f"{_ACCEPTED} Received: seed={seed!r} of shape {tuple(shape)}")
