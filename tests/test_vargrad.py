"""VarGrad: unbiased for the ELBO gradient (exact answers by enumeration), with power checks; the
identity with the leave-one-out score function, draw by draw; the same on JAX."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge

from .conftest import Z_THRESHOLD, exact_gradient, max_abs_z
from .test_score_function import BernoulliProblem, MixedProblem, _half_plane_problem

tfd = tfp.distributions
NUM_DRAWS = 4000
SAMPLE_SIZE = 4


class ModelBernoulli(BernoulliProblem):
    """test_score_function.py's 3-bit Bernoulli problem plus a model parameter `θ` in the target:
    `log p_θ(z) = log p(z) + θ (z_0 - z_2) - θ²/2`, so `∇_θ log p = z_0 - z_2 - θ`."""

    def __init__(self, dtype):
        super().__init__(dtype)
        self.theta = tf.Variable(tf.constant(0.7, dtype))
        self.variables = [self.logits, self.theta]

    def target_log_prob(self, z):
        theta = self.theta
        return super().target_log_prob(z) + theta * (z[..., 0] - z[..., 2]) - 0.5 * theta**2


class _SelfIncludingMean:
    """Deliberately wrong: the variance about a mean that includes the draw itself, `(1/S) Σ_s
    (f_s - f̄) ∇ log q`, i.e. `(1 - 1/S)` times VarGrad's φ-gradient (the biased sample
    variance, or the paper's loss without its leave-one-out reading). On a problem with no
    model parameter that is VarGrad's loss scaled by `1 - 1/S`."""

    def loss(self, target_log_prob_fn, surrogate_posterior, sample_size, **kwargs):
        loss = tge.estimators.VarGrad().loss(
            target_log_prob_fn, surrogate_posterior, sample_size, **kwargs
        )
        return (1.0 - 1.0 / sample_size) * loss


def _literal_log_variance_loss(problem, sample_size, seed):
    """Deliberately wrong for `θ`: `½ L̂_LV` differentiated for every parameter, the model's too.

    `½ (1/(S-1)) Σ_s (f_s - f̄)²`, `f = log q_φ(z̄) - log p_θ(z̄)`, at the draws every
    estimator's `loss` makes from `seed`. Its φ-gradient is VarGrad's; its θ-gradient is
    `-(1/(S-1)) Σ_s (f_s - f̄) ∇_θ log p_θ(z̄_s)`, not the ELBO's."""
    sample_seed, _ = tfp.random.split_seed(seed, n=2)  # as every estimator's `loss` splits it
    z = tf.stop_gradient(problem.surrogate.sample(sample_size, seed=sample_seed))
    f = problem.surrogate.log_prob(z) - problem.target_log_prob(z)
    return 0.5 * tf.math.reduce_variance(f) * sample_size / (sample_size - 1.0)


def _draws(loss_fn, problem, seed=3):
    return tge.diagnostics.gradient_draws(loss_fn, problem.variables, NUM_DRAWS, seed=seed)


def _vargrad_draws(problem, estimator=None):
    estimator = estimator or tge.estimators.VarGrad()
    return _draws(
        lambda s: estimator.loss(problem.target_log_prob, problem.surrogate, SAMPLE_SIZE, seed=s),
        problem,
    )


def test_bernoulli_with_a_model_parameter_unbiased(dtype):
    # Both φ (the logits) and θ (the model's) against the exact ELBO gradient by enumeration.
    problem = ModelBernoulli(dtype)
    draws = _vargrad_draws(problem)
    z = max_abs_z(draws, exact_gradient(problem.exact_objective, problem.variables))
    assert z < Z_THRESHOLD, f"max |z| {z:.2f}"


def test_mixed_continuous_and_discrete_surrogate_unbiased():
    # A Normal and a Bernoulli in one joint distribution, both through their scores.
    problem = MixedProblem(tf.float64)
    draws = _vargrad_draws(problem)
    z = max_abs_z(draws, exact_gradient(problem.exact_objective, problem.variables))
    assert z < Z_THRESHOLD, f"max |z| {z:.2f}"


def test_power_the_test_rejects_a_mean_that_includes_the_draw():
    problem = BernoulliProblem(tf.float64)
    draws = _vargrad_draws(problem, _SelfIncludingMean())
    z = max_abs_z(draws, exact_gradient(problem.exact_objective, problem.variables))
    assert z > Z_THRESHOLD, f"a biased variant passed (max |z| {z:.2f})"


def test_power_the_test_rejects_the_log_variance_gradient_for_model_parameters():
    # Why θ gets the ELBO's gradient and not the log-variance loss's: the latter is biased.
    problem = ModelBernoulli(tf.float64)
    draws = _draws(lambda s: _literal_log_variance_loss(problem, SAMPLE_SIZE, s), problem)
    exact = exact_gradient(problem.exact_objective, problem.variables)
    assert max_abs_z(draws[:1], exact[:1]) < Z_THRESHOLD  # φ: VarGrad's gradient, unbiased
    z = max_abs_z(draws[1:], exact[1:])
    assert z > Z_THRESHOLD, f"the log-variance θ-gradient passed (|z| {z:.2f})"


def _gradient(loss_fn, variables):
    with tf.GradientTape() as tape:
        loss = loss_fn()
    return loss.numpy(), [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_leave_one_out_score_function_without_its_zero_mean_term(seed):
    # Draw by draw, same seed: VarGrad = ½ ∇_φ L̂_LV (the literal log-variance loss) and =
    # ScoreFunction("leave_one_out") minus (1/S) Σ_s ∇ log q(z̄_s), the score term whose
    # mean is zero; θ gets the same gradient from both, and the value is the same.
    problem = ModelBernoulli(tf.float64)
    s, seed = 6, tf.constant([seed, 7], tf.int32)
    target, q = problem.target_log_prob, problem.surrogate
    value, vargrad = _gradient(
        lambda: tge.estimators.VarGrad().loss(target, q, s, seed=seed), problem.variables
    )
    sf_value, score_function = _gradient(
        lambda: tge.estimators.ScoreFunction("leave_one_out").loss(target, q, s, seed=seed),
        problem.variables,
    )
    sample_seed, _ = tfp.random.split_seed(seed, n=2)
    z = tf.stop_gradient(q.sample(s, seed=sample_seed))
    _, (score_term,) = _gradient(lambda: tf.reduce_mean(q.log_prob(z)), problem.variables[:1])
    _, (log_variance,) = _gradient(
        lambda: _literal_log_variance_loss(problem, s, seed), problem.variables[:1]
    )
    assert value == sf_value
    np.testing.assert_allclose(vargrad[0], score_function[0] - score_term, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(vargrad[0], log_variance, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(vargrad[1], score_function[1], rtol=1e-12)
    # Power: the dropped term is not zero on these draws, and the factor ½ matters.
    assert not np.allclose(vargrad[0], score_function[0], rtol=1e-3)
    assert not np.allclose(vargrad[0], 2.0 * log_variance, rtol=1e-3)


def test_zero_density_draws_are_left_out_as_the_leave_one_out_score_function_leaves_them():
    # As test_score_function's hand check: the loss is +inf, and the gradient is
    # -(1/S) Σ_{s alive} (f_s - b_s) (z_s - loc), with f = log w and b_s the mean of f over
    # the other draws with density (ScoreFunction's, without its "- 1" score term).
    loc, q, target, inside = _half_plane_problem()
    s, seed = 8, tf.constant([1, 0], tf.int32)  # 3 of the 8 draws have zero density
    loss, (grad,) = _gradient(lambda: tge.estimators.VarGrad().loss(target, q, s, seed=seed), [loc])
    sample_seed, _ = tfp.random.split_seed(seed, n=2)
    z = q.sample(s, seed=sample_seed).numpy()
    dead = z[:, 0] > 0.5
    assert 2 <= dead.sum() <= s - 3
    f = (inside.log_prob(z) - q.log_prob(z)).numpy()[~dead]
    baseline = (f.sum() - f) / (f.size - 1)
    assert loss == np.inf
    expected = -np.sum((f - baseline)[:, None] * (z[~dead] - loc.numpy()), 0) / s
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


def test_variance_against_the_score_function():
    variances = {}
    estimators = {
        "score_function": tge.estimators.ScoreFunction(),
        "score_function_leave_one_out": tge.estimators.ScoreFunction("leave_one_out"),
        "vargrad": tge.estimators.VarGrad(),
    }
    for name, estimator in estimators.items():
        problem = BernoulliProblem(tf.float64)
        draws = _vargrad_draws(problem, estimator)
        variances[name] = float(np.mean(tge.diagnostics.gradient_moments(draws[0]).variance))
    print("3-bit Bernoulli, S = 4, mean gradient variance of the logits:", variances)
    # 4000 draws: each variance has a relative standard error of about sqrt(2/4000) ~ 2%.
    # VarGrad also drops the leave-one-out estimator's zero-mean score term: 2.3x measured
    # here, so 1.5x fails only if that term stopped mattering.
    assert variances["score_function"] > 5.0 * variances["vargrad"]
    assert variances["score_function_leave_one_out"] > 1.5 * variances["vargrad"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sample_size": 1}, "sample_size"),
        ({"sample_size": 4, "importance_sample_size": 2}, "importance_sample_size"),
        (
            {"sample_size": 4, "discrepancy_fn": tfp.vi.kl_forward},
            "reverse KL.*log-variance.*Received: discrepancy_fn",
        ),
    ],
)
def test_refuses_calls_it_cannot_serve(kwargs, match):
    problem = BernoulliProblem(tf.float64)
    with pytest.raises(ValueError, match=match):
        tge.estimators.VarGrad().loss(problem.target_log_prob, problem.surrogate, **kwargs)


# --- on TFP's JAX substrate --------------------------------------------------------------


def test_unbiased_on_jax_with_a_model_parameter_the_target_closes_over():
    jax = pytest.importorskip("jax")
    from . import jax_estimator_utils as ju

    class JaxModelBernoulli(ju.BernoulliProblem):
        def parameters(self, dtype):
            return {**super().parameters(dtype), "theta": jax.numpy.asarray(0.7, dtype)}

        def target(self, params):
            base = super().target(params)
            theta = params["theta"]
            return lambda z: base(z) + theta * (z[..., 0] - z[..., 2]) - 0.5 * theta**2

    problem = JaxModelBernoulli()
    with ju.precision("float32"):
        params = problem.parameters("float32")
        loss = ju.estimator_loss(tge.estimators.VarGrad(), problem, SAMPLE_SIZE)
        draws = ju.gradient_draws(loss, params, NUM_DRAWS, 3)
        exact = problem.exact_gradient(params)
        z = ju.max_abs_z(draws, exact)
        assert z < Z_THRESHOLD, f"max |z| {z:.2f}"
        # Power, on the same draws: the self-including mean's φ-gradient is (1 - 1/S) times.
        wrong = {"logits": draws["logits"] * (1.0 - 1.0 / SAMPLE_SIZE)}
        assert ju.max_abs_z(wrong, {"logits": exact["logits"]}) > Z_THRESHOLD
