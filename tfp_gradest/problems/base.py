"""The problems contract: what a built-in problem provides, and the registry `get`/`names` read.

A problem is a target and a trainable approximation at a known place (its
initialisation, or after `fit`), together with whatever is known exactly about
it. The comparison (`tge.diagnostics.compare_estimators`), the command line and
the tests only use the methods below, so a new problem is one module in this
package holding one subclass whose `name` is the module's name: defining the
class registers it, and `names()` lists the modules without importing them
(the command line's `--help` stays free of TensorFlow).
"""

import importlib
import pkgutil
from typing import ClassVar

__all__ = ["Problem", "get", "names"]

_REGISTRY = {}
_NOT_PROBLEMS = frozenset({"base"})  # modules of this package that hold no problem


class Problem:
    """Base class of the built-in problems.

    Subclasses set `name` and, in `__init__`, `self.surrogate` (a `tfd.Distribution`
    with trainable variables), and define `target_log_prob(z)` (vectorised over
    leading sample axes). The defaults below serve a surrogate-posterior problem
    whose estimators are `tge.estimators`; a problem of another kind (e.g. a
    Bayesian Keras model, whose estimators are the layers') overrides
    `estimator_names`, `validate_estimator` and `loss_fn`.

    Class attributes:
      name: the registered name; equal to the defining module's name.
      reference_estimator: the unbiased estimator averaged over many draws where
        no closed-form gradient is known (`None`: no reference).
      fit_estimator, fit_learning_rate: what `fit` trains with.
      default_estimators: what `python -m tfp_gradest compare --problem <name>` compares.
    """

    name: ClassVar[str] = ""
    default_estimators: ClassVar[tuple] = ("reparameterization", "stl", "score_function")
    reference_estimator: ClassVar[str | None] = "stl"
    fit_estimator: ClassVar[str] = "reparameterization"
    fit_learning_rate: ClassVar[float] = 0.01

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name:
            return  # an abstract intermediate class
        module = cls.__module__.rsplit(".", 1)[-1]
        if cls.__module__.startswith(__name__.rsplit(".", 1)[0]) and module != cls.name:
            raise TypeError(
                f"A built-in problem's `name` must be its module's name, so that `names()` "
                f"needs no import. Received: name={cls.name!r} in module {module!r}"
            )
        if cls.name in _REGISTRY and _REGISTRY[cls.name].__qualname__ != cls.__qualname__:
            raise ValueError(f"A problem is already registered as {cls.name!r}.")
        _REGISTRY[cls.name] = cls

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

    # --- the estimators that apply -----------------------------------------------------

    def estimator_names(self):
        """Names accepted by `validate_estimator` and `loss_fn`."""
        from tfp_gradest import estimators

        return estimators.names()

    def validate_estimator(self, estimator, sample_size=1, importance_sample_size=1):
        """Raises `ValueError`/`TypeError` (naming the argument) if `estimator` cannot run here."""
        from tfp_gradest import estimators

        estimators.get(estimator).validate(
            self.surrogate,
            sample_size,
            importance_sample_size,
            target_log_prob_fn=self.target_log_prob,
        )

    def loss_fn(self, estimator, sample_size=1, importance_sample_size=1):
        """`seed -> scalar loss` whose gradient w.r.t. `variables` is `estimator`'s."""
        from tfp_gradest import estimators

        estimator = estimators.get(estimator)

        def loss(seed):
            return estimator.loss(
                self.target_log_prob,
                self.surrogate,
                sample_size,
                importance_sample_size,
                seed=seed,
            )

        return loss

    def variables_for(self, estimator):
        """The variables `loss_fn(estimator, ...)` is differentiated by (`variables`, by default;
        a problem that builds one model per estimator returns that model's)."""
        return self.variables

    def reference_estimator_for(self, importance_sample_size):
        """The unbiased, low-variance estimator of the same gradient used as a Monte Carlo
        reference: `reference_estimator` for the ELBO (K = 1), IWAE-DReG for the IWAE bound."""
        if importance_sample_size > 1:
            return "iwae_dreg"
        return self.reference_estimator

    # --- where the gradients are drawn -------------------------------------------------

    def fit(self, num_steps, seed=0):
        """Moves the surrogate towards the optimum: `num_steps` Adam steps on the ELBO."""
        import keras

        from tfp_gradest import vi

        if num_steps < 1:
            raise ValueError(f"`num_steps` must be at least 1. Received: num_steps={num_steps}")
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

    def distance_to_optimum(self):
        """A short text saying how far the surrogate is from the optimum, or `None` if unknown."""
        return None


def names():
    """The problem names, sorted: this package's modules (read without importing them,
    so TensorFlow is not loaded) and any other registered `Problem` subclass."""
    package = importlib.import_module(__name__.rsplit(".", 1)[0])
    modules = {
        m.name
        for m in pkgutil.iter_modules(package.__path__)
        if not m.name.startswith("_") and m.name not in _NOT_PROBLEMS
    }
    return sorted(modules | set(_REGISTRY))


def check_name(name):
    """Raises `ValueError` listing the valid names if `name` is not a built-in problem."""
    if name not in names():
        raise ValueError(f"Unknown problem {name!r}. Valid problems: {', '.join(names())}.")


def get(name, **kwargs):
    """Builds the built-in problem `name` with `kwargs` passed to its constructor."""
    check_name(name)
    if name not in _REGISTRY:
        importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.{name}")
    return _REGISTRY[name](**kwargs)
