"""Built-in problems with known answers, shared by the tests, benchmarks and the CLI.

Each is a `Problem` (see `base.py` for the contract): `target_log_prob`, a trainable
`surrogate`, its `variables`, the estimators that apply and their losses, `fit`,
and where known `exact_objective()` and `distance_to_optimum()`. `get(name)` builds
one; `names()` lists them. A new problem is one module here whose `Problem`
subclass has the module's name.

>>> from tfp_gradest import problems
>>> problems.names()[:3]
['bnn_digits', 'bnn_layers', 'gaussian']
"""

import importlib

from tfp_gradest.problems.base import Problem, check_name, get, names

# The classes are importable from here; their modules (and TensorFlow) load on first use.
_CLASSES = {
    "BayesianLinearRegression": "linear_regression",
    "BayesianLogisticRegression": "logistic_regression",
    "BayesianNeuralNetworkDigits": "bnn_digits",
    "BayesianNeuralNetworkLayers": "bnn_layers",
    "CorrelatedGaussian": "gaussian",
    "GaussianMixture": "gaussian_mixture",
    "ToyGaussian": "toy_gaussian",
}

__all__ = [*sorted(_CLASSES), "Problem", "check_name", "get", "names"]


def __getattr__(name):
    if name in _CLASSES:
        module = importlib.import_module(f"{__name__}.{_CLASSES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
