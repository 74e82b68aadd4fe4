"""The models' `gradient_estimator=` argument: resolved through `tge.estimators.get`, and
written to `get_config` (and `.keras` files) as a name or a config dict."""

from tfp_gradest import estimators

__all__ = ["config_value", "resolve"]


def resolve(gradient_estimator):
    """`(estimator, kept)`: the `GradientEstimator` for any identifier `tge.estimators.get`
    accepts (a name, a class, an instance or a config dict), and what the model keeps for
    its config: a name as given, anything else as the estimator itself."""
    estimator = estimators.get(gradient_estimator)
    return estimator, gradient_estimator if isinstance(gradient_estimator, str) else estimator


def config_value(kept):
    """The `get_config` entry: a name stays the name; an estimator becomes its config dict
    (`tge.estimators.serialize`), which `tge.estimators.get` reads back."""
    return kept if isinstance(kept, str) else estimators.serialize(kept)
