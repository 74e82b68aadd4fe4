"""The array substrate of the estimators: TensorFlow or JAX, one module each.

The estimator mathematics (`tfp_gradest.estimators`, `tfp_gradest._util.log_weights`)
is written once against the functions below; each substrate module implements them
with its own framework and TFP substrate. The module is chosen from the type of the
surrogate posterior (or of an array): `of(surrogate_posterior)`, or by name:
`get("tensorflow")`, `get("jax")`. Importing this package imports neither TensorFlow
nor JAX; a substrate module is imported the first time it is asked for.

Every substrate module (`tensorflow.py`, `jax.py`) provides:

* `NAME` (`"tensorflow"`, `"jax"`) and `tfp`, the TFP module of that substrate
  (`tensorflow_probability`, `tensorflow_probability.substrates.jax`);
* structures: `flatten`, `pack_sequence_as`, `is_nested`, `map_structure`,
  `stop_gradient` (of every array of a structure), `stop_distribution` (a
  distribution whose parameters carry no gradient; its samples still do through `ε`
  only when drawn from the live one);
* seeds: `sanitize_seed(seed)` (int, `None` or the substrate's own seed ->
  its stateless seed; the other substrate's seed is a `TypeError` naming `seed`),
  `split_seed(seed, n)` as TFP splits it;
* `name_scope(name)`, `is_array(x)`;
* array operations with TensorFlow's names and semantics (`where` broadcasts):
  `where`, `zeros_like`, `ones_like`, `fill`, `constant`, `cast`, `equal`, `is_inf`,
  `is_finite`, `is_nan`, `exp`, `log`, `square`, `softmax`, `reduce_logsumexp`,
  `reduce_sum`, `reduce_mean`, `reduce_max`, `reduce_all`, `reduce_any`, `stack`,
  `squeeze`, `argmax`, `one_hot`, `divide_no_nan`, `axis_size` (`tf.shape(x)[axis]`),
  `reshape_leading` (`[S * K] + rest -> [S, K] + rest`), `reduce_event`,
  `fusion_barrier`;
* the estimator-specific pieces: `surrogate_objective(value, surrogate)`,
  `check_target_log_prob(target_lp, surrogate_lp, num_samples)`,
  `path_derivative(log_weights_fn, stopped_samples)` (the inner gradient of
  `Σ log w` at stopped samples, for `log_weight_terms`) and
  `path_weighted_vjp(...)` (the one-backward-pass weighted surrogate of
  `path_weighted_surrogate`: `tf.custom_gradient` on TensorFlow, a `jax.custom_vjp`
  over the closure-converted target on JAX).
"""

import importlib
import sys

__all__ = ["NAMES", "get", "is_kl_reverse", "name_of", "of"]

NAMES = ("tensorflow", "jax")


def get(name):
    """The substrate module named `name` (`"tensorflow"` or `"jax"`), imported on first use."""
    if name not in NAMES:
        raise ValueError(f"`substrate` must be one of {NAMES}. Received: substrate={name!r}")
    return importlib.import_module(f"tfp_gradest._substrate.{name}")


def _is_jax_type(cls):
    for base in getattr(cls, "__mro__", (cls,)):
        module = getattr(base, "__module__", "") or ""
        if module.startswith(("tensorflow_probability.substrates.jax", "jax", "jaxlib")):
            return True
    return False


def name_of(x):
    """`"jax"` for a TFP-JAX distribution or a JAX array/tracer, else `"tensorflow"`.

    Reads the type's modules only: imports nothing. A JAX object can only exist when
    `jax` is imported, so the check is skipped otherwise.
    """
    if "jax" in sys.modules and _is_jax_type(type(x)):
        return "jax"
    return "tensorflow"


def of(x):
    """The substrate module of a distribution or an array (see `name_of`)."""
    return get(name_of(x))


_KL_REVERSE_MODULES = (
    "tensorflow_probability.python.vi",
    "tensorflow_probability.substrates.jax.vi",
)


def is_kl_reverse(discrepancy_fn):
    """`True` for `None` or either substrate's `tfp.vi.kl_reverse` (imports nothing)."""
    if discrepancy_fn is None:
        return True
    for name in _KL_REVERSE_MODULES:
        module = sys.modules.get(name)
        if module is not None and discrepancy_fn is getattr(module, "kl_reverse", None):
            return True
    return False
