"""Built-in problems with known answers, shared by the tests, benchmarks and the CLI.

Each is a `Problem` (see `base.py` for the contract): `target_log_prob`, a trainable
`surrogate`, its `variables`, the estimators that apply and their losses, `fit`,
and where known `exact_objective()` and `distance_to_optimum()`.

`get` follows the package's one convention: a name, a class, an instance or a
config dict (`get("gaussian", dim=5)` builds with keyword arguments); `names()`
lists the problems, `serialize` writes a problem's config. A new problem is one
module here whose `Problem` subclass is decorated with `@register("<module name>")`.

>>> from tfp_gradest import problems
>>> problems.names()[:3]
['bnn_digits', 'bnn_layers', 'gaussian']

The problem classes are attributes of this package, loaded on first use (with
TensorFlow): `import tfp_gradest.problems` and `names()` do not import TensorFlow.
"""

from tfp_gradest.problems import base
from tfp_gradest.problems.base import (  # noqa: F401 (public: listed in base.__all__)
    Problem,
    check_name,
    classes,
    deserialize,
    get,
    names,
    register,
    serialize,
    tfp_module,
)

# The public names: the problem classes (found through the registry, their modules imported
# on first use; tests/test_problems.py checks this list against it) and the contract's.
__all__ = [
    "BayesianLinearRegression",
    "BayesianLogisticRegression",
    "BayesianNeuralNetworkDigits",
    "BayesianNeuralNetworkLayers",
    "CorrelatedGaussian",
    "GaussianMixture",
    "HierarchicalGaussian",
    "LatentBits",
    "ToyGaussian",
    *base.__all__,
]


def __getattr__(name):
    # A problem class by its class name: the registry knows it once its module is imported.
    if name[:1].isupper():
        for cls in classes():
            if cls.__name__ == name:
                globals()[name] = cls  # later lookups skip this function
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
