"""The log-weight decomposition: direct + path terms reproduce the full pathwise
gradient exactly."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util import log_weights as lw
from tfp_gradest._util import structure

tfd = tfp.distributions


def _inputs(target, q, sample_size, importance_sample_size, seed):
    sample_seed, target_seed = tfp.random.split_seed(seed, n=2)
    return lw.ObjectiveInputs(
        target, q, sample_size, importance_sample_size, tfp.vi.kl_reverse, sample_seed, target_seed
    )


def test_direct_plus_path_terms_equal_the_reparameterization_gradient(dtype):
    loc = tf.Variable(tf.constant([0.3, -0.2], dtype))
    log_scale = tf.Variable(tf.constant([0.1, -0.4], dtype))
    theta = tf.Variable(tf.constant(0.7, dtype))  # a model parameter inside the target

    def target(z):
        return tfd.MultivariateNormalDiag(theta * tf.ones(2, dtype), tf.ones(2, dtype)).log_prob(z)

    variables = [loc, log_scale, theta]
    seed = tfp.random.sanitize_seed(5)
    with tf.GradientTape(persistent=True) as tape:
        q = tfd.MultivariateNormalDiag(loc, tf.exp(log_scale))
        inputs = _inputs(target, q, 3, 2, seed)
        full = lw.pathwise_log_weights(inputs).log_weights
        terms = lw.log_weight_terms(inputs)
        decomposed = terms.target_log_prob - terms.surrogate_log_prob + terms.path_log_weights
    np.testing.assert_allclose(terms.log_weights, full, rtol=1e-6)
    np.testing.assert_array_equal(terms.path_log_weights, np.zeros([3, 2]))
    for a, b in zip(tape.gradient(full, variables), tape.gradient(decomposed, variables)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # θ gets gradient only through log p̃; the path term never reaches it.
    assert tape.gradient(terms.path_log_weights, theta) is None


def test_call_target_unpacks_like_tfp_vi():
    assert structure.call_target(lambda a, b: a - b, {"b": 1.0, "a": 3.0}) == 2.0
    assert structure.call_target(lambda a, b: a - b, [3.0, 1.0]) == 2.0
    assert structure.call_target(lambda z: z, 4.0) == 4.0


def test_fused_one_pass_surrogate_equals_the_two_pass_decomposition():
    # Samples drawn inside the tape from a bijector-based surrogate: the case in
    # which TFP's bijector cache would hide ∂log q/∂z if tensors were reused.
    from tfp_gradest.estimators.importance_weights import normalized_weights, weighted_sum
    from tfp_gradest.problems import ToyGaussian

    problem = ToyGaussian(dim=3, perturbation=0.3, dtype=tf.float64)
    variables = problem.variables + problem.model_variables
    for path_coefficient in [lambda w: w, tf.square, lambda w: w - tf.square(w)]:
        with tf.GradientTape(persistent=True) as tape:
            inputs = _inputs(problem.target_log_prob, problem.surrogate, 2, 4, tf.constant([3, 4]))
            terms = lw.log_weight_terms(inputs)
            w = normalized_weights(terms.log_weights)
            two_pass = weighted_sum(w, terms.target_log_prob) + weighted_sum(
                path_coefficient(w), terms.path_log_weights
            )
            log_weights, fused = lw.path_weighted_surrogate(
                inputs,
                lambda log_w, f=path_coefficient: (
                    normalized_weights(log_w),
                    f(normalized_weights(log_w)),
                ),
            )
        np.testing.assert_allclose(log_weights, terms.log_weights, rtol=1e-12)
        for a, b in zip(tape.gradient(two_pass, variables), tape.gradient(fused, variables)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# --- the tfp.vi drop-in contract: same call, same samples, same target call ----------


def _joint_coroutine_surrogate():
    loc = tf.Variable(tf.constant([0.2, -0.1], tf.float64))

    root = tfd.JointDistributionCoroutine.Root

    def model():
        yield root(tfd.Normal(loc[0], tf.constant(1.0, tf.float64), name="a"))
        yield root(tfd.Normal(loc[1], tf.constant(0.5, tf.float64), name="b"))

    return tfd.JointDistributionCoroutine(model)


def _tfp_and_tge_losses(target, q, estimator, tfp_estimator, sample_size=3, k=1):
    seed = tf.constant([11, 12], tf.int32)  # a stateless seed: both use it as given
    ours = tge.estimators.get(estimator).loss(target, q, sample_size, k, seed=seed)
    theirs = tfp.vi.monte_carlo_variational_loss(
        target,
        q,
        sample_size=sample_size,
        importance_sample_size=k,
        gradient_estimator=tfp_estimator,
        seed=seed,
    )
    return ours, theirs


def test_joint_distribution_coroutine_samples_are_unpacked_as_in_tfp_vi():
    q = _joint_coroutine_surrogate()

    def target(a, b):  # two positional parts: tfp.vi calls target(*z)
        return tfd.Normal(tf.constant(1.0, tf.float64), 1.0).log_prob(a) - b**2

    ours, theirs = _tfp_and_tge_losses(
        target, q, "reparameterization", tfp.vi.GradientEstimators.REPARAMETERIZATION
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    sample = q.sample(seed=(1, 2))
    assert structure.call_target(lambda a, b: a - b, sample) == sample[0] - sample[1]


@pytest.mark.parametrize(
    "estimator,tfp_estimator,k",
    [
        ("reparameterization", tfp.vi.GradientEstimators.REPARAMETERIZATION, 1),
        ("score_function", tfp.vi.GradientEstimators.SCORE_FUNCTION, 1),
        ("iwae", tfp.vi.GradientEstimators.REPARAMETERIZATION, 4),
    ],
    ids=["reparameterization", "score_function", "iwae_k4"],
)
def test_same_seed_gives_the_same_samples_and_loss_as_tfp_vi(estimator, tfp_estimator, k):
    # Samples are laid out as tfp.vi lays them out ([S*K] from the first half of the
    # split seed), so the loss values agree to rounding.
    loc = tf.Variable(tf.constant([0.3, -0.2], tf.float64))
    q = tfd.MultivariateNormalDiag(loc, tf.constant([1.0, 0.7], tf.float64))
    target = tfd.MultivariateNormalDiag(tf.ones(2, tf.float64)).log_prob
    ours, theirs = _tfp_and_tge_losses(target, q, estimator, tfp_estimator, 3, k)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_a_target_that_takes_a_seed_gets_the_seed_tfp_vi_gives_it():
    loc = tf.Variable(tf.constant([0.3, -0.2], tf.float64))
    q = tfd.MultivariateNormalDiag(loc, tf.ones(2, tf.float64))
    seen = []

    def target(z, seed=None):  # e.g. a target that subsamples data with its seed
        seen.append(seed)
        noise = tf.random.stateless_normal([], seed=seed, dtype=tf.float64)
        return tfd.MultivariateNormalDiag(tf.ones(2, tf.float64)).log_prob(z) + noise

    ours, theirs = _tfp_and_tge_losses(
        target, q, "reparameterization", tfp.vi.GradientEstimators.REPARAMETERIZATION
    )
    assert all(s is not None for s in seen)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    # A different seed gives the target different noise.
    other = tge.estimators.get("reparameterization").loss(target, q, 3, seed=[1, 2])
    assert other != ours
