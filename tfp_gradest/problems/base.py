"""The problems contract, and the registry that `get`, `names` and `register` serve.

A problem is a target and a trainable approximation at a known place (its
initialisation, or after `fit`), together with whatever is known exactly about
it. The comparison (`tge.diagnostics.compare_estimators`), the command line and
the tests only use the methods below.

Problems follow the package's one `get(identifier)` convention
(`tfp_gradest._util.registry`). A new built-in problem is one module in this
package holding one subclass decorated with `@register("<the module's name>")`:
the decorator registers it, and `names()` lists the package's modules without
importing them (so the command line's `--help` stays free of TensorFlow);
`get(name)` imports the module on first use.
"""

import importlib
import inspect
import pkgutil
from typing import ClassVar

import numpy as np

from tfp_gradest._util import registry
from tfp_gradest._util.registry import Configurable, Registry

__all__ = [
    "Problem",
    "check_name",
    "classes",
    "deserialize",
    "get",
    "names",
    "register",
    "serialize",
    "tfp_module",
]

_PACKAGE = __name__.rsplit(".", 1)[0]

# The TFP substrates a problem can run on (`Problem.substrates`): the command line's `--backend`.
SUBSTRATES = ("tensorflow", "jax")
_NOT_PROBLEMS = frozenset({"base"})  # modules of this package that hold no problem


class Problem(Configurable):
    """Base class of the built-in problems.

    Subclasses are registered with `@register(name)`, set `self.surrogate` (a
    `tfd.Distribution` with trainable variables) in `__init__`, and define
    `target_log_prob(z)` (vectorised over
    leading sample axes). The defaults below serve a surrogate-posterior problem
    whose estimators are `tge.estimators`; a problem of another kind (e.g. a
    Bayesian Keras model, whose estimators are the layers') overrides
    `estimator_names`, `validate_estimator` and `loss_fn`.

    A problem is configurable: `get_config()` returns the arguments it was built
    with (every constructor argument, defaults included; a `dtype` as its name),
    so `get({"class_name": ..., "config": ...})` and `from_config` build the same
    problem again. Equality stays identity (a problem holds trainable state).

    Class attributes:
      name: the registered name (set by `register`); a built-in's is its module's name.
      reference_estimator: the unbiased estimator averaged over many draws where
        no closed-form gradient is known (`None`: no reference).
      fit_estimator, fit_learning_rate: what `fit` trains with.
      default_estimators: what `python -m tfp_gradest compare --problem <name>` compares.
      default_sample_size, default_importance_sample_size: its `S` and `K` where `-S`/`-K`
        are not given (e.g. 8 draws for the leave-one-out estimators of a discrete problem).
      substrates: the TFP substrates its gradients can be drawn on (`SUBSTRATES`).

    On JAX (`"jax"` in `substrates`), a problem is a function of a parameter pytree:
    `parameters()` (the current values of the surrogate's unconstrained variables, a dict
    of numpy arrays), `build_surrogate(parameters, tfp)` (written once for both TFP
    substrates: `tfp` is `tensorflow_probability` or its JAX substrate),
    `target_log_prob_fn("jax")` and `exact_objective_fn("jax")`. The state stays in the
    TensorFlow variables: `assign_parameters` writes a pytree back (a fit on JAX does).
    """

    name: ClassVar[str] = ""
    default_estimators: ClassVar[tuple] = ("reparameterization", "stl", "score_function")
    default_sample_size: ClassVar[int] = 1
    default_importance_sample_size: ClassVar[int] = 1
    reference_estimator: ClassVar[str | None] = "stl"
    fit_estimator: ClassVar[str] = "reparameterization"
    fit_learning_rate: ClassVar[float] = 0.01
    substrates: ClassVar[tuple] = ("tensorflow",)

    def __new__(cls, *args, **kwargs):
        # The constructor's arguments, recorded once here, are the problem's config.
        problem = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(problem, *args, **kwargs)
        except TypeError:
            problem._config = None  # `__init__` raises its own error for these arguments
            return problem
        bound.apply_defaults()
        problem._config = {name: _plain(value) for name, value in list(bound.arguments.items())[1:]}
        return problem

    def get_config(self):
        """The constructor arguments this problem was built with: `type(self)(**config)`."""
        return dict(self._config)

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    # --- what is being differentiated ------------------------------------------------

    @property
    def variables(self):
        """The variables whose gradients are compared (the surrogate's, by default)."""
        return list(self.surrogate.trainable_variables)

    def target_log_prob(self, z):
        raise NotImplementedError

    def exact_objective(self):
        """The ELBO in closed form (a Tensor), or `None` where it is not known."""
        return None

    # --- the same, as functions of a parameter pytree (any substrate) -------------------

    def parameter_variables(self):
        """`{name: tf.Variable}`: the unconstrained variables behind `parameters()`."""
        return {}

    def parameters(self):
        """The current unconstrained parameters, `{name: numpy array}` (`parameter_variables`)."""
        return {name: v.numpy() for name, v in self.parameter_variables().items()}

    def assign_parameters(self, parameters):
        """Writes `parameters` (as `parameters()` returns them) into the variables."""
        for name, variable in self.parameter_variables().items():
            variable.assign(np.asarray(parameters[name]))

    def build_surrogate(self, parameters, tfp):
        """The surrogate as a distribution of `tfp` (either substrate) built from `parameters`."""
        raise NotImplementedError

    def target_log_prob_fn(self, substrate="tensorflow"):
        """`target_log_prob` on `substrate` (`"tensorflow"` or `"jax"`), `z -> log p(z)`.

        On TensorFlow, `target_log_prob` itself; on JAX, `_jax_target_log_prob_fn()`,
        the one hook a problem that lists `"jax"` in `substrates` implements.
        """
        self.check_substrate(substrate)
        if substrate == "tensorflow":
            return self.target_log_prob
        return self._jax_target_log_prob_fn()

    def _jax_target_log_prob_fn(self):
        """`z -> log p(z)` on JAX arrays (TFP's JAX substrate); see `target_log_prob_fn`."""
        raise NotImplementedError(
            f"Problem {self.name!r} lists 'jax' in `substrates` but does not implement "
            "`_jax_target_log_prob_fn`."
        )

    def exact_objective_fn(self, substrate="tensorflow"):
        """`parameters -> ELBO` in closed form on `substrate`, or `None` where not known."""
        self.check_substrate(substrate)
        return None

    def check_substrate(self, substrate):
        """Raises `ValueError` (naming `backend`) if the problem cannot run on `substrate`."""
        if substrate not in SUBSTRATES:
            raise ValueError(
                f"`backend` must be one of {', '.join(SUBSTRATES)}. Received: backend={substrate!r}"
            )
        if substrate not in self.substrates:
            raise ValueError(
                f"Problem {self.name!r} runs on {' and '.join(self.substrates)} only. "
                f"Received: backend={substrate!r}"
            )

    # --- the estimators that apply -----------------------------------------------------

    def estimator_names(self):
        """Names accepted by `validate_estimator` and `loss_fn`."""
        from tfp_gradest import estimators

        return estimators.names()

    def validate_estimator(self, estimator, sample_size=1, importance_sample_size=1, noise="iid"):
        """Raises `ValueError`/`TypeError` (naming the argument) if `estimator` cannot run here."""
        from tfp_gradest import estimators

        estimators.get(estimator).validate(
            self.surrogate,
            sample_size,
            importance_sample_size,
            target_log_prob_fn=self.target_log_prob,
            noise=noise,
        )

    def loss_fn(self, estimator, sample_size=1, importance_sample_size=1, noise="iid"):
        """`seed -> scalar loss` whose gradient w.r.t. `variables` is `estimator`'s (its base
        noise `noise`, as `GradientEstimator.loss` takes it)."""
        from tfp_gradest import estimators

        estimator = estimators.get(estimator)

        def loss(seed):
            return estimator.loss(
                self.target_log_prob,
                self.surrogate,
                sample_size,
                importance_sample_size,
                seed=seed,
                noise=noise,
            )

        return loss

    def variables_for(self, estimator):
        """The variables `loss_fn(estimator, ...)` is differentiated by (`variables`, by default;
        a problem that builds one model per estimator returns that model's)."""
        return self.variables

    def state_variables_for(self, estimator):
        """The Keras variables `loss_fn(estimator, ...)` advances (the `SeedGenerator` states of
        a Keras model whose layers draw the noise, as `model_gradient_draws` takes them), or
        `None` for a loss whose noise comes from its seed (the default)."""
        return None

    def reference_estimator_for(self, importance_sample_size):
        """The unbiased, low-variance estimator of the same gradient used as a Monte Carlo
        reference: `reference_estimator` for the ELBO (K = 1), IWAE-DReG for the IWAE bound."""
        if importance_sample_size > 1:
            return "iwae_dreg"
        return self.reference_estimator

    # --- where the gradients are drawn -------------------------------------------------

    def fit(self, num_steps, seed=0, substrate="tensorflow"):
        """Moves the surrogate towards the optimum: `num_steps` Adam steps on the ELBO.

        On `substrate="jax"`, the steps are one jitted `lax.scan` of optax's Adam over the
        `parameters()` pytree, written back with `assign_parameters`.
        """
        import keras

        from tfp_gradest import vi

        if num_steps < 1:
            raise ValueError(f"`num_steps` must be at least 1. Received: num_steps={num_steps}")
        self.check_substrate(substrate)
        if substrate == "jax":
            return self._fit_jax(num_steps, seed)
        return vi.fit_surrogate_posterior(
            self.target_log_prob,
            self.surrogate,
            keras.optimizers.Adam(self.fit_learning_rate),
            num_steps,
            sample_size=8,
            trainable_variables=self.variables,
            jit_compile=True,
            seed=seed,
            gradient_estimator=self.fit_estimator,
        )

    def _fit_jax(self, num_steps, seed):
        import jax
        import optax

        from tfp_gradest import estimators

        estimator, tfp = estimators.get(self.fit_estimator), tfp_module("jax")
        target = self.target_log_prob_fn("jax")
        optimizer = optax.adam(self.fit_learning_rate)

        def loss(parameters, key):
            surrogate = self.build_surrogate(parameters, tfp)
            return estimator.loss(target, surrogate, 8, 1, seed=key)

        def step(state, key):
            parameters, optimizer_state = state
            value, gradients = jax.value_and_grad(loss)(parameters, key)
            updates, optimizer_state = optimizer.update(gradients, optimizer_state, parameters)
            return (optax.apply_updates(parameters, updates), optimizer_state), value

        @jax.jit
        def run(parameters, keys):
            return jax.lax.scan(step, (parameters, optimizer.init(parameters)), keys)

        parameters = jax.tree_util.tree_map(jax.numpy.asarray, self.parameters())
        keys = jax.random.split(jax.random.PRNGKey(seed), num_steps)
        (parameters, _), losses = run(parameters, keys)
        self.assign_parameters(jax.tree_util.tree_map(np.asarray, parameters))
        return np.asarray(losses)

    def distance_to_optimum(self):
        """A short text saying how far the surrogate is from the optimum, or `None` if unknown."""
        return None


class DiagonalNormalSurrogate:
    """Mixin of the problems whose surrogate is a `MultivariateNormalDiag(loc, scale)`.

    The problem sets `self.loc` (a `tf.Variable`) and `self.scale` (a
    `tfp.util.TransformedVariable` through the bijector `scale_bijector` names);
    this gives the parameter pytree and builds the same surrogate on either substrate.
    """

    scale_bijector: ClassVar[str] = "Softplus"  # a class of `tfp.bijectors`

    def parameter_variables(self):
        return {"loc": self.loc, "scale": self.scale.pretransformed_input}

    def build_surrogate(self, parameters, tfp):
        scale = getattr(tfp.bijectors, self.scale_bijector)()(parameters["scale"])
        return tfp.distributions.MultivariateNormalDiag(parameters["loc"], scale)


def tfp_module(substrate):
    """The TFP module of `substrate`: `tensorflow_probability` or its JAX substrate."""
    if substrate == "jax":
        from tensorflow_probability.substrates import jax as tfp
    else:
        import tensorflow_probability as tfp
    return tfp


def _plain(value):
    """A `tf.DType` as its name (constructors take either), so that configs are plain data."""
    if type(value).__name__ == "DType" and hasattr(value, "as_numpy_dtype"):
        return value.name
    return value


_REGISTRY = Registry("problem", Problem, "problem")


def register(name):
    """Class decorator: registers a `Problem` subclass under `name` for `get`.

    The name is normalised (lower case, `-` as `_`) and set as the class's `name`.
    A problem defined in this package must be registered under its module's name,
    so that `names()` can list it without importing it.

    Raises:
      ValueError: for a name already registered.
      TypeError: for a class that is not a `Problem`, or a built-in whose name is
        not its module's.

    #### Examples

    ```python
    @tge.problems.register("my_problem")
    class MyProblem(tge.problems.Problem):
        def __init__(self, dim=3): ...
    ```
    """
    register_class = _REGISTRY.register(name)

    def decorator(cls):
        module = getattr(cls, "__module__", "")
        if module.startswith(_PACKAGE + ".") and module.rsplit(".", 1)[-1] != name:
            raise TypeError(
                "A built-in problem is registered under its module's name, so that `names()` "
                f"needs no import. Received: name={name!r} in module {module!r}"
            )
        return register_class(cls)

    return decorator


def _module_names():
    package = importlib.import_module(_PACKAGE)
    return {
        m.name
        for m in pkgutil.iter_modules(package.__path__)
        if not m.name.startswith("_") and m.name not in _NOT_PROBLEMS
    }


def names():
    """The problem names, sorted: this package's modules (read without importing them,
    so TensorFlow is not loaded) and any other registered `Problem` subclass."""
    return sorted(_module_names() | set(_REGISTRY.names()))


def check_name(name):
    """Raises `ValueError` listing the valid names if `name` is not a problem's name."""
    if name not in names():
        raise _unknown_problem(name)


def _unknown_problem(name):
    """The `ValueError` for a name that is no problem's, listing the valid ones."""
    return ValueError(
        f"Unknown problem {name!r}. Valid problems: {', '.join(names())}. "
        f"Received: problem={name!r}"
    )


def classes():
    """The registered problem classes, in registration order, after importing every problem
    module of this package (which imports TensorFlow)."""
    for module in sorted(_module_names()):
        importlib.import_module(f"{_PACKAGE}.{module}")
    return _REGISTRY.classes()


def _problem_class(name):
    """The class registered as `name` (or named `name`), importing its module if needed."""
    if not isinstance(name, str):
        raise TypeError(f"A problem's name is a string. Received: problem={name!r}")
    key = registry.canonical_name(name)
    if key not in _REGISTRY.names():
        if key in _module_names():
            importlib.import_module(f"{_PACKAGE}.{key}")
        else:  # perhaps a class name, e.g. "GaussianMixture"
            classes()
    try:
        return _REGISTRY.get_class(name)
    except ValueError:
        raise _unknown_problem(name) from None


def get(identifier, **kwargs):
    """Returns a problem from a name, a class, an instance or a config dict.

    The package's one `get(identifier)` convention (as `keras.initializers.get`):

    * a problem name (`names()`), or a problem class's name: the class is built
      with `kwargs`, e.g. `get("gaussian", dim=5)`;
    * a `Problem` subclass: built with `kwargs`;
    * a `Problem` instance: returned unchanged;
    * a config dict `{"class_name": ..., "config": {...}}` as `serialize` writes
      it: built from the config.

    Args:
      identifier: see above.
      **kwargs: constructor arguments, with a name or a class.

    Raises:
      ValueError: for an unknown name (listing the valid ones).
      TypeError: for anything else, or `kwargs` with an instance or a config.
    """
    if isinstance(identifier, str):
        return _problem_class(identifier)(**kwargs)
    if isinstance(identifier, type) and issubclass(identifier, Problem):
        return identifier(**kwargs)
    if kwargs:
        raise TypeError(
            "Keyword arguments build a problem from its name or class; an instance or a "
            "config dict is used as it is. Received: "
            f"problem={identifier!r} with {', '.join(sorted(kwargs))}"
        )
    if isinstance(identifier, dict) and "class_name" in identifier:
        _problem_class(identifier["class_name"])  # imports its module
    elif not isinstance(identifier, Problem):
        # Not the registry's message: it lists only the problems imported so far.
        raise TypeError(
            f"`problem` must be a problem name (one of {', '.join(names())}), a Problem class "
            "or instance, or a config dict with 'class_name' and 'config'. "
            f"Received: problem={identifier!r}"
        )
    return _REGISTRY.get(identifier)


def serialize(problem):
    """`{"class_name": ..., "config": ...}`: the arguments `problem` was built with, which
    `get`/`deserialize` turn into a new problem of the same kind and initialisation."""
    return _REGISTRY.serialize(problem)


def deserialize(config):
    """A new problem from `serialize`'s output (`get(config)`)."""
    if not (isinstance(config, dict) and "class_name" in config):
        raise TypeError(
            "`config` must be a dict with 'class_name' and 'config', as `serialize` writes it. "
            f"Received: config={config!r}"
        )
    return get(config)
