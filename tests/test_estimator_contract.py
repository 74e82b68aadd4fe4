"""One contract, every registered estimator: scalar loss, finite gradients, XLA, seeds, value."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_gradest as tge
from tfp_gradest.problems import CorrelatedGaussian

ALL = tge.estimators.names()


def _sizes(estimator):
    """A valid `(sample_size, importance_sample_size)` for `estimator`."""
    k = (
        1
        if estimator.max_importance_sample_size == 1
        else max(4, estimator.min_importance_sample_size)
    )
    return 4, k


def _loss_and_grads(estimator, problem, seed, jit_compile):
    s, k = _sizes(estimator)

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(seed):
        with tf.GradientTape() as tape:
            loss = estimator.loss(problem.target_log_prob, problem.surrogate, s, k, seed=seed)
        return loss, tape.gradient(loss, problem.variables)

    return step(tf.constant(seed, tf.int32))


@pytest.mark.parametrize("name", ALL)
def test_scalar_finite_loss_and_gradients_under_xla(name, dtype):
    problem = CorrelatedGaussian(dtype=dtype)
    loss, grads = _loss_and_grads(tge.estimators.get(name), problem, [1, 2], jit_compile=True)
    assert loss.shape == () and loss.dtype == dtype and np.isfinite(loss)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_result_other_seed_other_result(name):
    problem = CorrelatedGaussian()
    estimator = tge.estimators.get(name)
    a = _loss_and_grads(estimator, problem, [3, 4], jit_compile=False)
    b = _loss_and_grads(estimator, problem, [3, 4], jit_compile=False)
    c = _loss_and_grads(estimator, problem, [5, 6], jit_compile=False)
    np.testing.assert_array_equal(a[0], b[0])
    for ga, gb in zip(a[1], b[1]):
        np.testing.assert_array_equal(ga, gb)
    assert a[0] != c[0]


def test_elbo_estimators_report_the_same_loss_value():
    # The estimator changes the gradient, never the value (same seed, same samples).
    problem = CorrelatedGaussian(dtype=tf.float64)
    values = {
        name: tge.estimators.get(name)
        .loss(problem.target_log_prob, problem.surrogate, sample_size=5, seed=7)
        .numpy()
        for name in ALL
        if tge.estimators.get(name).max_importance_sample_size == 1
    }
    assert len(values) >= 3
    reference = values["reparameterization"]
    for name, value in values.items():
        np.testing.assert_allclose(value, reference, rtol=1e-12, err_msg=name)


def test_get_accepts_instances_classes_and_spellings():
    stl = tge.estimators.STL()
    assert tge.estimators.get(stl) is stl
    assert isinstance(tge.estimators.get(tge.estimators.STL), tge.estimators.STL)
    assert isinstance(tge.estimators.get("Score-Function"), tge.estimators.ScoreFunction)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Valid names: .*stl"):
        tge.estimators.get("stll")
    with pytest.raises(TypeError, match="gradient_estimator"):
        tge.estimators.get(3)
