"""Argument checks with one behaviour everywhere in the package.

Every public argument that is a count, a size, a probability, a scale or a seed
goes through one of these functions, so that the same mistake gets the same
answer from a layer, a model, a callback or an optimiser:

* a whole number is a Python `int` or a NumPy integer (`np.int64(3)`), or a
  0-d integer array; it comes back as a Python `int`;
* a float where an integer is meant (`2.5`, and also `2.0`) is a `TypeError`:
  it is never truncated or rounded;
* a string is a `TypeError`, even one that spells a number (`"8"`);
* a bool is a `TypeError` wherever a number is meant (`True` is not `1` here);
* a number of the right type outside its range is a `ValueError`;
* every message names the argument, says what it must be, shows what was
  received with its type, and says what to do, in the layers' style:

```none
`latent_dim` must be a positive integer. Received: latent_dim=2.5 (float). Pass a whole
number as an int (e.g. latent_dim=2); a float is not rounded.
```

The module uses only the standard library and NumPy, so it runs on every Keras
backend and can be used from code that must not import TensorFlow. Tensors are
the caller's business: convert a static one to NumPy first.
"""

import math
import numbers
import sys

import numpy as np

__all__ = [
    "check_integer",
    "check_integer_sequence",
    "check_positive_finite",
    "check_positive_integer",
    "check_real",
    "check_seed",
    "is_integer",
]


def _item(value):
    """A 0-d NumPy array as its scalar; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item() if value.dtype.kind in "biuf" else value
    return value


def is_integer(value):
    """True for a Python or NumPy integer (or 0-d integer array); False for bools and floats."""
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iu"
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iuf"
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _received(name, value):
    return f"Received: {name}={value!r} ({type(value).__name__})."


def _integer_range(minimum, maximum):
    if maximum is None:
        if minimum is None:
            return "an integer"
        if minimum == 1:
            return "a positive integer"
        if minimum == 0:
            return "a non-negative integer"
        return f"an integer of at least {minimum}"
    if minimum is None:
        return f"an integer of at most {maximum}"
    return f"an integer in [{minimum}, {maximum}]"


def _type_hint(name, value, kind):
    if isinstance(value, str):
        return "Pass a number, not a string."
    if isinstance(value, (bool, np.bool_)):
        return f"Pass {kind}, not a bool."
    if kind == "an int" and _is_real(value):
        return f"Pass a whole number as an int (e.g. {name}=2); a float is not rounded."
    return f"Pass {kind}."


def _join(*parts):
    return " ".join(part for part in parts if part)


def check_integer(name, value, minimum=None, maximum=None, reason=None, hint=None):
    """`value` as a Python `int` in `[minimum, maximum]` (`None`: unbounded).

    Args:
      name: the argument's name, as the caller wrote it.
      value: what was received.
      minimum, maximum: inclusive bounds, or `None`.
      reason: optional clause explaining the bound (e.g. "a variance needs two draws"),
        put in brackets after the requirement.
      hint: optional sentence saying what to do when the value is out of range.

    Raises:
      TypeError: `value` is not a Python/NumPy integer (a float, a string, a bool, ...).
      ValueError: `value` is outside `[minimum, maximum]`.
    """
    requirement = _integer_range(minimum, maximum)
    if reason:
        requirement += f" ({reason})"
    if not is_integer(value):
        raise TypeError(
            _join(
                f"`{name}` must be {requirement}.",
                _received(name, value),
                _type_hint(name, value, "an int"),
            )
        )
    number = int(_item(value))
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(_join(f"`{name}` must be {requirement}.", _received(name, value), hint))
    return number


def check_static_integer(name, value, minimum=None, reason=None):
    """`check_integer` of a value that may be a TensorFlow Tensor with a static value.

    A sample size sets a shape, and XLA needs static shapes: a constant Tensor counts as
    its value, a Tensor without a static value is a `TypeError`. (TensorFlow is only
    consulted when `value` is one of its Tensors, so this module still needs no backend.)
    """
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.is_tensor(value):
        static = tf.get_static_value(value)
        if static is None:
            raise TypeError(
                _join(
                    f"`{name}` must have a static value (XLA needs static sample shapes).",
                    _received(name, value),
                    f"Pass a Python int (e.g. {name}=8) or a constant Tensor.",
                )
            )
        value = static
    return check_integer(name, value, minimum=minimum, reason=reason)


def check_positive_integer(name, value, reason=None, hint=None):
    """`check_integer(name, value, minimum=1, ...)`: a Python `int` of at least 1."""
    return check_integer(name, value, minimum=1, reason=reason, hint=hint)


def check_integer_sequence(name, value, minimum=1, allow_scalar=False):
    """A non-empty sequence (list or tuple) of integers of at least `minimum`, as a tuple.

    A string is refused (`"32"` is not `(3, 2)`); with `allow_scalar`, one integer `n`
    means `(n,)`. A 1-d NumPy array is a sequence too (its items are checked as any).
    """
    if allow_scalar and is_integer(value):
        return (check_integer(name, value, minimum=minimum),)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = list(value)
    if not isinstance(value, (list, tuple)):
        kind = "an int or a list/tuple of ints" if allow_scalar else "a list or tuple of ints"
        raise TypeError(
            _join(
                f"`{name}` must be {kind}.",
                _received(name, value),
                f"Pass a tuple of ints, e.g. {name}=(32, 32)"
                + (", not a string." if isinstance(value, str) else "."),
            )
        )
    if not value:
        raise ValueError(
            _join(
                f"`{name}` must be a non-empty sequence of integers.",
                _received(name, value),
                f"Pass a tuple of ints, e.g. {name}=(32, 32).",
            )
        )
    result = []
    for index, item in enumerate(value):
        if not is_integer(item):
            raise TypeError(
                _join(
                    f"Each item of `{name}` must be {_integer_range(minimum, None)}.",
                    f"Received: {name}={value!r}, whose item {index} is {item!r} "
                    f"({type(item).__name__}).",
                    _type_hint(f"{name}[{index}]", item, "an int"),
                )
            )
        if int(_item(item)) < minimum:
            raise ValueError(
                _join(
                    f"Each item of `{name}` must be {_integer_range(minimum, None)}.",
                    f"Received: {name}={value!r}, whose item {index} is {item!r}.",
                )
            )
        result.append(int(_item(item)))
    return tuple(result)


def _interval(low, high, low_inclusive, high_inclusive):
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    low = "-inf" if low is None else low
    high = "inf" if high is None else high
    return f"{left}{low}, {high}{right}"


def check_real(
    name,
    value,
    low=None,
    high=None,
    low_inclusive=True,
    high_inclusive=True,
    finite=True,
    reason=None,
    hint=None,
):
    """`value` as a Python `float` in the interval given (`None`: unbounded on that side).

    Integers are accepted (a probability of `1` is fine). NaN is always refused, and
    infinities too when `finite`.

    Raises:
      TypeError: `value` is not a real number (a string, a bool, `None`, a complex, ...).
      ValueError: `value` is outside the interval, NaN, or infinite when `finite`.
    """
    if low is None and high is None:
        requirement = "a finite real number" if finite else "a real number"
    elif low == 0 and high is None and not low_inclusive:
        requirement = "a finite positive number" if finite else "a positive number"
    elif low == 0 and high is None:
        requirement = "a finite non-negative number" if finite else "a non-negative number"
    else:
        requirement = "a real number in " + _interval(low, high, low_inclusive, high_inclusive)
    if reason:
        requirement += f" ({reason})"
    if not _is_real(value):
        raise TypeError(
            _join(
                f"`{name}` must be {requirement}.",
                _received(name, value),
                _type_hint(name, value, "a float"),
            )
        )
    number = float(_item(value))
    inside = not math.isnan(number) and (math.isfinite(number) or not finite)
    if low is not None:
        inside = inside and (number >= low if low_inclusive else number > low)
    if high is not None:
        inside = inside and (number <= high if high_inclusive else number < high)
    if not inside:
        raise ValueError(_join(f"`{name}` must be {requirement}.", _received(name, value), hint))
    return number


def check_positive_finite(name, value, reason=None, hint=None):
    """`value` as a finite positive Python `float` (integers accepted)."""
    return check_real(name, value, low=0, low_inclusive=False, reason=reason, hint=hint)


def check_seed(name, value, allow_none=True):
    """A seed given as a Python or NumPy integer, as a Python `int` (Keras refuses NumPy
    integers); `None` when `allow_none`. Floats, strings and bools are a `TypeError`."""
    if value is None and allow_none:
        return None
    if not is_integer(value):
        kind = "an int or None" if allow_none else "an int"
        raise TypeError(
            _join(
                f"`{name}` must be {kind}.",
                _received(name, value),
                _type_hint(name, value, "an int (e.g. seed=0)"),
            )
        )
    return int(_item(value))
