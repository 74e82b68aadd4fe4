"""Statistical tests of the single-sample ELBO estimators against the exact ELBO gradient."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.base import GradientEstimator
from tfp_gradest.problems import CorrelatedGaussian

from .conftest import Z_THRESHOLD, exact_gradient, max_abs_z

tfd = tfp.distributions

NUM_DRAWS = 2000

UNBIASED = {
    "reparameterization": tge.estimators.Reparameterization(),
    "reparameterization_analytic_entropy": tge.estimators.Reparameterization(analytic_entropy=True),
    "stl": tge.estimators.STL(),
    "score_function": tge.estimators.ScoreFunction(),
    "score_function_moving_average": tge.estimators.ScoreFunction("moving_average"),
    "score_function_leave_one_out": tge.estimators.ScoreFunction("leave_one_out"),
}


class _EntropyBlind(GradientEstimator):
    """Deliberately wrong: the pathwise gradient of `E_q[log p]` only (drops the entropy)."""

    max_importance_sample_size = 1

    def _objective(self, inputs):
        pathwise = lw.pathwise_log_weights(inputs)
        return pathwise.log_weights[:, 0], pathwise.target_log_prob[:, 0]


def _z(estimator, problem, jit_compile=True, sample_size=4, seed=11):
    draws = tge.diagnostics.gradient_draws(
        lambda s: estimator.loss(problem.target_log_prob, problem.surrogate, sample_size, seed=s),
        problem.variables,
        NUM_DRAWS,
        seed=seed,
        jit_compile=jit_compile,
    )
    return max_abs_z(draws, exact_gradient(problem.exact_objective, problem.variables))


@pytest.mark.parametrize("name", sorted(UNBIASED))
def test_unbiased_for_the_exact_elbo_gradient(name, dtype, jit_compile):
    z = _z(UNBIASED[name], CorrelatedGaussian(dtype=dtype), jit_compile)
    assert z < Z_THRESHOLD, f"{name}: max |bias z-score| {z:.2f}"


def test_power_the_same_test_rejects_a_biased_estimator():
    z = _z(_EntropyBlind(), CorrelatedGaussian(dtype=tf.float64))
    assert z > Z_THRESHOLD, f"a gradient that ignores the entropy passed (max |z| {z:.2f})"


def test_stl_has_zero_variance_when_q_equals_the_target(dtype):
    problem = CorrelatedGaussian(dtype=dtype)
    # A target that is exactly the surrogate, built from the surrogate's own values.
    target = tfd.MultivariateNormalDiag(
        tf.convert_to_tensor(problem.loc), tf.convert_to_tensor(problem.scale)
    )
    variances = {}
    for name in ["stl", "reparameterization"]:
        estimator = tge.estimators.get(name)
        draws = tge.diagnostics.gradient_draws(
            lambda s, e=estimator: e.loss(target.log_prob, problem.surrogate, 4, seed=s),
            problem.variables,
            200,
            seed=0,
        )
        variances[name] = max(float(np.max(np.var(d.numpy(), axis=0))) for d in draws)
    # Zero up to rounding: XLA may fuse p's and q's identical formulas differently,
    # so allow gradients of size ~1 to differ by 10 ulps.
    assert variances["stl"] < (10 * np.finfo(dtype.as_numpy_dtype).eps) ** 2
    # The reparameterisation gradient keeps the score term, of order-one variance
    # here (200 draws estimate it within ~10%), so 1e-3 is far below it.
    assert variances["reparameterization"] > 1e-3
