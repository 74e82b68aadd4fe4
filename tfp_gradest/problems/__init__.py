"""Built-in problems with known answers, shared by the tests, benchmarks and the CLI.

Each problem has `target_log_prob`, a trainable `surrogate`, its `variables`, and
(where the answer is closed form) `exact_objective()`. `get(name)` builds one.
"""

from tfp_gradest.problems.bnn_digits import BayesianNeuralNetworkDigits
from tfp_gradest.problems.gaussian import CorrelatedGaussian
from tfp_gradest.problems.linear_regression import BayesianLinearRegression
from tfp_gradest.problems.logistic_regression import BayesianLogisticRegression
from tfp_gradest.problems.toy_gaussian import ToyGaussian

__all__ = [
    "BayesianLinearRegression",
    "BayesianLogisticRegression",
    "BayesianNeuralNetworkDigits",
    "CorrelatedGaussian",
    "ToyGaussian",
    "get",
    "names",
]

_PROBLEMS = {
    CorrelatedGaussian.name: CorrelatedGaussian,
    BayesianLinearRegression.name: BayesianLinearRegression,
    ToyGaussian.name: ToyGaussian,
    BayesianLogisticRegression.name: BayesianLogisticRegression,
    BayesianNeuralNetworkDigits.name: BayesianNeuralNetworkDigits,
}


def names():
    """The built-in problem names, sorted."""
    return sorted(_PROBLEMS)


def get(name, **kwargs):
    """Builds the built-in problem `name` with `kwargs` passed to its constructor."""
    if name not in _PROBLEMS:
        raise ValueError(f"Unknown problem {name!r}. Valid problems: {', '.join(names())}.")
    return _PROBLEMS[name](**kwargs)
