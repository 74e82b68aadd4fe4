"""One place that turns a user's seed into a TFP stateless seed."""

import numbers

import numpy as np
import tensorflow_probability as tfp

__all__ = ["sanitize_seed"]


def sanitize_seed(seed):
    """Returns a stateless seed (int32 Tensor of shape `[2]`) for `seed`.

    A Python `int` maps to the same stateless seed every time. (Passing an int to
    `tfp.random.sanitize_seed` draws it statefully, so two eager calls with
    `seed=7` would differ.) `None` gives a fresh random seed; a pair or a
    Tensor is passed to `tfp.random.sanitize_seed` unchanged.
    """
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        seed = int(seed) % (1 << 62)
        seed = np.array([seed >> 31, seed & 0x7FFFFFFF], dtype=np.int32)
    return tfp.random.sanitize_seed(seed)
