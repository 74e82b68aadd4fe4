"""The estimator contract, the value-preserving surrogate, and the registry.

Every estimator returns a loss whose *value* is the negative objective estimate
the user already monitors (negative ELBO, negative IWAE bound, ...) and whose
*gradient* is the estimator's. All of them go through `surrogate_objective`.

Estimators follow the package's one `get(identifier)` convention
(`tfp_gradest._util.registry`): `get` takes a registered name, a class, an
instance or a config dict, and `serialize` writes the config dict back.
"""

import abc
from typing import ClassVar

from tfp_gradest import _substrate
from tfp_gradest._util import arguments, quasi_random, structure
from tfp_gradest._util import log_weights as lw
from tfp_gradest._util.registry import Configurable, Registry

__all__ = [
    "GradientEstimator",
    "deserialize",
    "get",
    "names",
    "register",
    "serialize",
    "surrogate_objective",
]


def surrogate_objective(value, surrogate):
    """A tensor equal to `value` whose gradient is the gradient of `surrogate`.

        out = stop(value) + (surrogate - stop(surrogate))

    Proof: forward, `surrogate - stop(surrogate)` is `x - x = 0` exactly in
    floating point for finite `x`, so `out == value` bit for bit. Backward,
    `stop` has zero derivative, so `∂out = ∂surrogate`.

    An entry of `surrogate` that is `±inf` (an objective estimate of `-inf`:
    every sample of that objective has zero target density) would make the
    difference `inf - inf = NaN`. Such an entry is replaced by 0 first: the
    value stays `value` (so the loss is `+inf`, as the mathematics says) and
    that entry contributes no gradient (a zero-density sample has zero weight),
    while the other entries keep theirs. NaN is not replaced: a NaN-producing
    target gives a NaN loss and NaN gradients, never a silent zero.

    Works on both substrates (`tfp_gradest._substrate`), chosen from `surrogate`'s
    type: TensorFlow tensors or JAX arrays.

    Args:
      value: Tensor, the objective estimate to report.
      surrogate: Tensor of the same shape whose gradient is the estimator.

    Returns:
      A Tensor with the value of `value` and the gradient of `surrogate`.

    #### Examples

    >>> import tensorflow as tf
    >>> x = tf.Variable(2.0)
    >>> with tf.GradientTape() as tape:
    ...     out = surrogate_objective(tf.constant(5.0), 3.0 * x)
    >>> float(out), float(tape.gradient(out, x))
    (5.0, 3.0)
    >>> float(surrogate_objective(-float("inf"), tf.constant(-float("inf"))))
    -inf
    """
    return _substrate.of(surrogate).surrogate_objective(value, surrogate)


def check_target_log_prob_fn(target_log_prob_fn):
    """Raises a `TypeError` naming `target_log_prob_fn` unless it is callable."""
    if not callable(target_log_prob_fn):
        raise TypeError(
            "`target_log_prob_fn` must be a Python callable returning log densities, e.g. "
            "`joint_distribution.log_prob` or `lambda z: ...`. "
            f"Received: target_log_prob_fn={target_log_prob_fn!r}"
        )


# Default of `validate`'s `target_log_prob_fn`: "not given, do not check" (None is checked).
_NOT_GIVEN = object()


class GradientEstimator(Configurable, abc.ABC):
    """Base class: a gradient estimator for a variational objective.

    The contract. A subclass implements `_objective(inputs)`, where `inputs` is
    an `ObjectiveInputs` (`tfp_gradest._util.log_weights`: the target, the
    surrogate, `S`, `K`, the discrepancy and the split seed), returning
    per-objective `(value, surrogate)` tensors of shape `[S] + batch_shape` to
    maximise. It gets its log-weights from the ONE function of
    `tfp_gradest._util.log_weights` that its `data_path` flag names. `loss`
    validates the call, splits the seed, and returns
    `-mean_S(surrogate_objective(value, surrogate))`: the value is the
    negative objective, the gradient the estimator's. A new estimator is one
    small file: flags, `_objective`, `@register`; a check that depends on its
    own options goes in `_validate_options`, never in a copy of `validate`.

    Substrates. `_objective` is written once, against `inputs.ops` (the module of
    `tfp_gradest._substrate` chosen from the surrogate's type: TensorFlow or TFP's
    JAX substrate) and the helpers of `importance_weights`, which dispatch on their
    arrays' type; so every estimator runs on both with the same call. An option
    that one substrate cannot serve is refused in `_validate_substrate`.

    Flags are attributes read once, before any tracing (class attributes; an
    instance may set its own in `__init__` when its arguments decide them):

    * `data_path`: which data-path function `_objective` uses:
      `"pathwise_log_weights"` (log-weights with every gradient live),
      `"log_weight_terms"` (direct, score and path terms kept apart) or
      `"path_weighted_surrogate"` (weighted target and path terms in one
      backward pass).
    * `requires_reparameterization`: needs a fully reparameterised surrogate.
    * `min_sample_size`: allowed `S` (e.g. 2 for a leave-one-out baseline).
    * `min_importance_sample_size`, `max_importance_sample_size`: allowed `K`.
    * `supports_discrepancy_fn`: valid for any `tfp.vi` Csiszar `discrepancy_fn`,
      not just the reverse KL `tfp.vi.kl_reverse`; if not, `reverse_kl_only_because`
      (e.g. `" (it drops a score term whose mean is zero only there)"`) says why.

    Zero and NaN densities: a sample where the target returns `-inf` has weight
    zero and contributes no gradient; an objective estimate of `-inf` gives the
    loss `+inf` (that objective then contributes no gradient, the others do). A
    NaN from the target is never masked: it reaches the loss, and the gradients
    wherever differentiation carries it.

    Options. An estimator is a small immutable object whose options are its
    constructor arguments, each readable as a public property of the same name
    (`DReG(alpha=0.3).alpha`). So, from `Configurable`, `get_config()` returns
    them, `from_config(config)` rebuilds an equal estimator, `repr` shows the
    options that differ from their defaults, and two estimators are equal when
    they have the same class and options.
    """

    name: ClassVar[str] = ""
    data_path: ClassVar[str] = "pathwise_log_weights"
    requires_reparameterization: ClassVar[bool] = True
    min_sample_size: ClassVar[int] = 1
    min_importance_sample_size: ClassVar[int] = 1
    max_importance_sample_size: ClassVar[int | None] = None
    supports_discrepancy_fn: ClassVar[bool] = False
    reverse_kl_only_because: ClassVar[str] = ""

    def validate(
        self,
        surrogate_posterior,
        sample_size=1,
        importance_sample_size=1,
        discrepancy_fn=None,
        target_log_prob_fn=_NOT_GIVEN,
        noise="iid",
    ):
        """Raises a `ValueError`/`TypeError` naming the argument for calls this estimator cannot
        serve.

        `target_log_prob_fn` is checked when given (`None` is refused). `noise="rqmc"` is
        refused for an estimator with a score term (`requires_reparameterization` false)
        and for a surrogate that is not a transform of standard normals.

        Returns:
          `(sample_size, importance_sample_size)` as Python ints.
        """
        return self._validated(
            surrogate_posterior,
            sample_size,
            importance_sample_size,
            discrepancy_fn,
            target_log_prob_fn,
            noise,
        )[:2]

    def _validated(
        self,
        surrogate_posterior,
        sample_size,
        importance_sample_size,
        discrepancy_fn,
        target_log_prob_fn,
        noise,
    ):
        """`validate`'s checks; returns `(sample_size, importance_sample_size, noise)`, checked.

        `loss` takes the checked (lower-case) `noise` from here, so it is checked once.
        """
        if target_log_prob_fn is not _NOT_GIVEN:
            check_target_log_prob_fn(target_log_prob_fn)
        if not (
            hasattr(surrogate_posterior, "sample") and hasattr(surrogate_posterior, "log_prob")
        ):
            raise TypeError(
                "`surrogate_posterior` must be a `tfd.Distribution` (with `sample` and "
                f"`log_prob`). Received: surrogate_posterior={surrogate_posterior!r}"
            )
        sample_size = arguments.check_static_integer(
            "sample_size", sample_size, minimum=self.min_sample_size
        )
        importance_sample_size = arguments.check_static_integer(
            "importance_sample_size",
            importance_sample_size,
            minimum=self.min_importance_sample_size,
        )
        maximum = self.max_importance_sample_size
        if maximum is not None and importance_sample_size > maximum:
            raise ValueError(
                f"The {type(self).__name__} estimator estimates the ELBO, which uses "
                f"`importance_sample_size=1`; for the importance-weighted bound use "
                f"gradient_estimator='iwae' (or 'iwae_dreg'). "
                f"Received: importance_sample_size={importance_sample_size}"
            )
        if self.requires_reparameterization:
            bad = structure.non_reparameterized_parts(surrogate_posterior)
            if bad:
                parts = "" if bad == [None] else f" (parts {bad})"
                raise ValueError(
                    f"The {type(self).__name__} estimator differentiates through the "
                    f"samples, so `surrogate_posterior` must be fully reparameterized, but "
                    f"it is not{parts}. Use gradient_estimator='score_function' "
                    "(ScoreFunction(reparameterized_parts='pathwise') keeps pathwise "
                    "gradients for the reparameterized parts)."
                )
        if not _substrate.is_kl_reverse(discrepancy_fn):
            if not self.supports_discrepancy_fn:
                raise ValueError(
                    f"The {type(self).__name__} estimator is derived for the reverse KL "
                    "divergence (the ELBO and the importance-weighted bound) only"
                    f"{self.reverse_kl_only_because}, so `discrepancy_fn` must be "
                    "`tfp.vi.kl_reverse`. For other Csiszar divergences use "
                    "gradient_estimator='reparameterization' or 'score_function' "
                    "(importance_sample_size=1), 'iwae' or 'vimco' (any "
                    "importance_sample_size), as tfp.vi does. "
                    f"Received: discrepancy_fn={discrepancy_fn!r}"
                )
        noise = quasi_random.check_noise(noise)
        if noise == "rqmc":
            if not self.requires_reparameterization:
                raise ValueError(
                    f"The {type(self).__name__} estimator has a score-function term, whose "
                    "samples must be independent draws of `surrogate_posterior`; "
                    "noise='rqmc' (quasi-random base normals) is for the pathwise "
                    "estimators (e.g. 'reparameterization', 'stl', 'iwae', 'iwae_dreg'). "
                    "Use noise='iid'. Received: noise='rqmc'"
                )
            quasi_random.check_surrogate(surrogate_posterior)
        self._validate_options(discrepancy_fn)
        self._validate_substrate(_substrate.name_of(surrogate_posterior))
        return sample_size, importance_sample_size, noise

    def _validate_substrate(self, substrate):
        """Hook: raises for an option the substrate (`"tensorflow"`, `"jax"`) cannot serve.

        Every estimator runs on both; an option that keeps state (a moving average)
        may not be pure on JAX. Raises like `validate`; returns nothing.
        """
        del substrate  # no option of the base class depends on it

    def _validate_options(self, discrepancy_fn):
        """Hook for checks that depend on the instance's own options (e.g. `analytic_entropy`).

        Subclasses override this, never `validate` itself, so that `validate`'s
        signature and defaults (the "not given" `target_log_prob_fn` above all)
        exist in one place only. Raises like `validate`; returns nothing.
        """
        del discrepancy_fn  # no option of the base class depends on it

    def loss(
        self,
        target_log_prob_fn,
        surrogate_posterior,
        sample_size=1,
        importance_sample_size=1,
        seed=None,
        discrepancy_fn=None,
        name=None,
        noise="iid",
    ):
        """Monte Carlo loss whose value is the negative objective and whose gradient is this
        estimator's.

        Args:
          target_log_prob_fn: Python callable: the unnormalised target log density
            `log p(x, z)`. It receives samples with one leading sample axis of
            size `sample_size * importance_sample_size` (structured like the
            surrogate's samples, unpacked as in `tfp.vi`: `fn(*z)` for a list,
            tuple or `JointDistributionCoroutine` sample, `fn(**z)` for a dict)
            and returns log densities of shape `[S * K] + batch_shape`, the
            shape of `surrogate_posterior.log_prob(z)`, in the same dtype. A
            target with a `seed` parameter gets a per-call seed, as in `tfp.vi`.
          surrogate_posterior: `tfd.Distribution` `q(z)`, possibly a joint
            distribution with structured samples: a TensorFlow Probability
            distribution, or a `tensorflow_probability.substrates.jax` one (built
            from JAX arrays, e.g. inside the function `jax.grad` differentiates),
            which runs the same estimator on JAX (`tfp_gradest._substrate`).
          sample_size: Python `int` `S`, independent objectives averaged.
            Default value: `1`.
          importance_sample_size: Python `int` `K`, samples per objective.
            Default value: `1`.
          seed: PRNG seed; see `tfp.random.sanitize_seed`. On JAX, a Python int
            (as `jax.random.PRNGKey(seed)`) or a JAX PRNG key, split as TFP-JAX's
            `tfp.vi.monte_carlo_variational_loss` splits it; `None` is refused there.
            Default value: `None`.
          discrepancy_fn: Csiszar function of the log-weights, as in `tfp.vi`;
            `None` means `tfp.vi.kl_reverse` (the negative ELBO).
            Default value: `None`.
          name: Python `str` name scope. Default value: the estimator's name.
          noise: how the samples' base standard normals are drawn: `"iid"` (TFP's
            own sampling, the samples of `tfp.vi`) or `"rqmc"`: randomised
            quasi-Monte Carlo (Buchholz et al., 2018), one digitally shifted Sobol
            point per objective pushed through the inverse normal CDF, for the
            pathwise estimators and surrogates that transform standard normals
            (`tfp_gradest._util.quasi_random`). Unbiased; its variance falls faster
            than `1/S` for smooth targets: take `sample_size` a power of two.
            Default value: `"iid"`.

        Returns:
          loss: Tensor of shape `surrogate_posterior.batch_shape` (a scalar in
            the common case).
        """
        surrogate_posterior = _built_once(surrogate_posterior)
        sample_size, importance_sample_size, noise = self._validated(
            surrogate_posterior,
            sample_size,
            importance_sample_size,
            discrepancy_fn,
            target_log_prob_fn,
            noise,
        )
        ops = _substrate.of(surrogate_posterior)
        if _substrate.is_kl_reverse(discrepancy_fn):
            # Any substrate's `kl_reverse` (or None): the one that takes this substrate's arrays.
            discrepancy_fn = ops.tfp.vi.kl_reverse
        with ops.name_scope(name or self.name or type(self).__name__):
            # Split as `tfp.vi` splits it, so the same stateless seed draws the same samples.
            sample_seed, target_seed = ops.split_seed(ops.sanitize_seed(seed), n=2)
            inputs = lw.ObjectiveInputs(
                target_log_prob_fn=target_log_prob_fn,
                surrogate_posterior=surrogate_posterior,
                sample_size=sample_size,
                importance_sample_size=importance_sample_size,
                discrepancy_fn=discrepancy_fn,
                sample_seed=sample_seed,
                target_seed=target_seed,
                substrate=ops,
                noise=noise,
            )
            value, surrogate = self._objective(inputs)
            # The path-weighted surrogate's value is exactly 0: nothing infinite to mask.
            finite = self.data_path == "path_weighted_surrogate"
            objective = ops.surrogate_objective(value, surrogate, surrogate_is_finite=finite)
            return -ops.reduce_mean(objective, axis=0)

    @abc.abstractmethod
    def _objective(self, inputs):
        """Returns `(value, surrogate)`, each of shape `[S] + batch_shape`, to maximise.

        Args:
          inputs: the validated call, a `tfp_gradest._util.log_weights.ObjectiveInputs`.
        """


def _built_once(surrogate_posterior):
    """The distribution a `tfp.experimental.util.DeferredModule` surrogate builds, built once.

    A `DeferredModule` (e.g. `tfp.experimental.vi.build_factored_surrogate_posterior`'s)
    runs its build function, reading every variable, at EVERY attribute access: the
    checks of `validate` and the sampling would build it four times per traced call
    (`tfp.vi` three), each a copy of the surrogate in the graph that tracing pays for
    (half of the trace of a 3-part surrogate). The built distribution's `copy()` has the
    same parameter tensors, so values and gradients are those of the deferred surrogate.
    Any other surrogate is returned unchanged.
    """
    if _substrate.of(surrogate_posterior).is_deferred(surrogate_posterior):
        return surrogate_posterior.copy()
    return surrogate_posterior


_REGISTRY = Registry("gradient estimator", GradientEstimator, "gradient_estimator")


def register(name):
    """Class decorator: registers a `GradientEstimator` subclass under `name` for `get`.

    The name is normalised (lower case, `-` as `_`) and set as the class's `name`.
    Raises a `ValueError` for a name already registered, or a `data_path` flag that
    names none of `tfp_gradest._util.log_weights.DATA_PATHS`.

    #### Examples

    ```python
    @tge.estimators.register("my_estimator")
    class MyEstimator(tge.estimators.GradientEstimator):
        def _objective(self, inputs): ...
    ```
    """
    register_class = _REGISTRY.register(name)

    def decorator(cls):
        data_path = getattr(cls, "data_path", None)
        if data_path not in lw.DATA_PATHS:
            raise ValueError(
                f"`{cls.__name__}.data_path` must name one of the data-path functions "
                f"{lw.DATA_PATHS} of `tfp_gradest._util.log_weights`. "
                f"Received: data_path={data_path!r}"
            )
        return register_class(cls)

    return decorator


def names():
    """The registered estimator names, sorted alphabetically (not in registration order).

    Each is a valid `gradient_estimator=` value and the `name` of its class.
    """
    return sorted(_REGISTRY.names())


def get(identifier):
    """Returns an estimator from a name, a class, an instance or a config dict.

    As `keras.initializers.get`:

    * a registered name such as `"stl"` or `"iwae_dreg"` (case and `-` vs `_`
      do not matter): that class with its default options;
    * a `GradientEstimator` subclass: constructed with its defaults;
    * a `GradientEstimator` instance: returned unchanged;
    * a config dict `{"class_name": ..., "config": {...}}`, as `serialize`
      writes it (`class_name` the class's name or its registered name).

    Args:
      identifier: one of the above.

    Returns:
      A `GradientEstimator` instance.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
      TypeError: for anything else, naming `gradient_estimator`.

    #### Examples

    >>> get("iwae_dreg")
    IWAEDReG()
    >>> get({"class_name": "DReG", "config": {"alpha": 0.5}})
    DReG(alpha=0.5)
    """
    return _REGISTRY.get(identifier)


def serialize(estimator):
    """The config dict `{"class_name": ..., "config": {...}}` that `get` turns back into an
    equal estimator.

    Args:
      estimator: anything `get` accepts (a name is serialised with the defaults).

    #### Examples

    >>> config = serialize(get("dreg"))
    >>> config
    {'class_name': 'DReG', 'config': {'alpha': 0.0}}
    >>> get(config) == get("dreg")
    True
    """
    return _REGISTRY.serialize(estimator)


def deserialize(config):
    """The estimator a `serialize` config dict describes (`get` restricted to config dicts).

    Raises:
      TypeError: unless `config` is a dict with a `"class_name"`.
    """
    if not (isinstance(config, dict) and "class_name" in config):
        raise TypeError(
            "`config` must be a dict with 'class_name' and 'config', as "
            f"`tge.estimators.serialize` writes it. Received: config={config!r}"
        )
    return _REGISTRY.get(config)
