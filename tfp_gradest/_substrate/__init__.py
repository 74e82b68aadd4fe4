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
* structures: `flatten`, `pack_sequence_as`, `is_nested`, `map_structure`
  (`tf.nest`; `jax.tree_util`), `stop_gradient` (of every array of a structure);
* seeds: `sanitize_seed(seed)` (TensorFlow: `tfp_gradest._util.seeds`; JAX: an int
  as `jax.random.PRNGKey(seed)` or a key, `None` refused) and `split_seed(seed, n)`,
  TFP's split, as `tfp.vi.monte_carlo_variational_loss` splits its seed on that
  substrate; the other substrate's seed is a `TypeError` naming `seed`;
* `name_scope(name)`, `is_array(x)`, `is_deferred(x)` (a `DeferredModule` of that substrate);
* array operations with TensorFlow's names and semantics (`where` broadcasts):
  `where`, `zeros_like`, `ones_like`, `fill(like, value)`, `constant`, `cast`,
  `equal`, `is_inf`, `is_finite`, `is_nan`, `exp`, `log`, `square`, `softmax`,
  `reduce_logsumexp`, `reduce_sum`, `reduce_mean`, `reduce_max`, `reduce_all`,
  `reduce_any`, `add_n`, `stack`, `squeeze`, `argmax`, `one_hot`, `divide_no_nan`,
  `concat`, `axis_size` (`tf.shape(x)[axis]`), `reshape_leading` (`[S * K] + rest -> [S, K] +
  rest`), `reduce_event`, `zero_where` (zero the gradients of zero-weight samples),
  `fusion_barrier` (XLA computes a tensor once; the identity on JAX);
* the estimator-specific pieces: `surrogate_objective(value, surrogate)`,
  `check_target_log_prob(target_lp, surrogate_lp, num_samples)` (dtype, shape, and
  an array of the other substrate refused), `path_derivative(log_weights_fn,
  stopped, with_path)` (the inner gradient of `Σ log w` at stopped samples, for
  `log_weight_terms`: a `tf.GradientTape`; `jax.vjp`), `vjp(fn, *primals)` (`jax.vjp`'s
  contract: live outputs and a pullback, for `tfp_gradest._util.flow_path`) and
  `path_weighted_vjp(...)` (the one-backward-pass weighted surrogate of `path_weighted_surrogate`:
  `tf.custom_gradient`; a `jax.custom_vjp` over the closure-converted target, so
  parameters the target closes over get their gradient from `jax.grad`).

`of(x)`, `name_of(x)`, `get(name)` and `is_kl_reverse(fn)` (either substrate's
`tfp.vi.kl_reverse`) read types only and import nothing.
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
