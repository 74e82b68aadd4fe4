"""Generalized DReG: exact reductions, unbiasedness for θ and φ on a two-level Gaussian model
(against Gauss-Hermite quadrature of the K = 2 bound), power checks, and a JAX run."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest._util import log_weights as lw
from tfp_gradest.estimators.importance_weights import (
    log_mean_exp,
    normalized_weights,
    weighted_sum,
)

from .conftest import Z_THRESHOLD

tfd = tfp.distributions

X = 1.3  # the observation (ThreeLevel's; TwoLevel's is the problem's default)


_NAMES = ["m2", "r2", "w", "m1", "r1", "a", "b", "log_s", "c"]  # TwoLevel's variables


class TwoLevel:
    """`tge.problems.HierarchicalGaussian` with one entry per latent, at its fixed start.

    z2 ~ N(0, 1), z1 | z2 ~ N(a z2 + b, s²), x | z1 ~ N(c z1, 1), x = 1.3; θ = (a, b, log s, c).
    Surrogate (sampled z2 first): q(z2) = N(m2, e^r2), q(z1 | z2) = N(w z2 + m1, e^r1);
    φ = (m2, r2, w, m1, r1). `a, b, log s` enter the prior conditional `p(z1 | z2)` (declared
    to GDReG through `latent_distributions`), `c` the likelihood only. Variables in that
    order: m2 r2 w m1 r1 a b log_s c.
    """

    def __init__(self, declare=True):
        self.problem = tge.problems.get(
            "hierarchical_gaussian",
            dim=1,
            start="fixed",
            prior_scale=1.0,
            declare_latent_distributions=declare,
            dtype="float64",
        )
        self.variables = self.problem.variables

    def surrogate(self):
        return self.problem.surrogate

    def target(self):
        return self.problem.target_log_prob

    def loss(self, estimator, k, sample_size, seed):
        estimator = tge.estimators.get(estimator)
        return estimator.loss(self.target(), self.surrogate(), sample_size, k, seed=seed)

    def quadrature_iwae_gradient(self, num_nodes=20):
        """The exact gradient of `-E[L_2]` (the problem's Gauss-Hermite quadrature)."""
        with tf.GradientTape() as tape:
            bound = self.problem.iwae_bound_by_quadrature(num_nodes)
        return [-g.numpy() for g in tape.gradient(bound, self.variables)]


def _draws(problem, estimator, k, num_draws, sample_size, seed):
    return [
        d.numpy()
        for d in tge.diagnostics.gradient_draws(
            lambda s: problem.loss(estimator, k, sample_size, s), problem.variables, num_draws, seed
        )
    ]


def _z_scores(draws, reference):
    return np.concatenate(
        [np.ravel(tge.diagnostics.bias_z_scores(d, r)) for d, r in zip(draws, reference)]
    )


class _NaiveHierarchicalDReG(tge.estimators.GDReG):
    """Wrong on purpose: IWAE-DReG with each conditional's parameters held fixed.

    `Σ w̃² (∂_z log w |ψ fixed) · dz/dφ`: it drops the conditional-density score terms
    (through `z2` into `q(z1 | z2)`), neither keeping them (IWAE-DReG) nor transforming
    them (GDReG). Biased for the parameters of `q(z2)`.
    """

    def _objective(self, inputs):
        terms = lw.conditional_path_terms(inputs)
        weights = normalized_weights(terms.log_weights)
        surrogate = weighted_sum(weights, terms.direct_target_log_prob) + weighted_sum(
            weights * weights, terms.path_log_weights
        )
        return log_mean_exp(terms.log_weights), surrogate


class _PriorAtK1Identity(tge.estimators.GDReG):
    """Wrong on purpose: the prior's score transformed with the K = 1 identity (`w̃` where
    GDReG has `w̃²`). Biased for `a` when K > 1."""

    def _objective(self, inputs):
        terms = lw.conditional_path_terms(inputs)
        weights = normalized_weights(terms.log_weights)
        surrogate = (
            weighted_sum(
                weights,
                terms.direct_target_log_prob + terms.path_log_weights + terms.prior_path_rest,
            )
            - weighted_sum(weights - weights * weights, terms.score_path_log_weights)
            - weighted_sum(weights, terms.prior_path_log_weights)
        )
        return log_mean_exp(terms.log_weights), surrogate


# --- exact reductions on the same samples ---------------------------------------------


def _gradients(estimator, target, surrogate_fn, variables, k=5, seed=(3, 4)):
    with tf.GradientTape() as tape:
        loss = tge.estimators.get(estimator).loss(target, surrogate_fn(), 3, k, seed=seed)
    return float(loss), [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.mark.parametrize("structure", ["plain", "mean_field_joint"])
def test_equals_iwae_dreg_without_conditional_parts(structure):
    loc = tf.Variable([0.3, -0.2], dtype=tf.float64)
    log_scale = tf.Variable([0.1, -0.3], dtype=tf.float64)
    a = tf.Variable(0.7, dtype=tf.float64)

    if structure == "plain":

        def surrogate():
            return tfd.MultivariateNormalDiag(loc, tf.exp(log_scale))

        def target(z):
            return tf.reduce_sum(tfd.Normal(a * [1.0, 2.0], 1.0).log_prob(z), axis=-1)

    else:

        def surrogate():
            scale = tf.exp(log_scale)
            return tfd.JointDistributionSequential(
                [tfd.Normal(loc[0], scale[0]), tfd.Normal(loc[1], scale[1])]
            )

        def target(z0, z1):
            return tfd.Normal(a, 1.0).log_prob(z0) + tfd.Normal(2.0 * a, 1.0).log_prob(z1)

    variables = [loc, log_scale, a]
    loss_dreg, dreg = _gradients("iwae_dreg", target, surrogate, variables)
    loss_gdreg, gdreg = _gradients("gdreg", target, surrogate, variables)
    # The values agree to rounding: IWAE-DReG takes log q from the sampler, GDReG evaluates it.
    np.testing.assert_allclose(loss_gdreg, loss_dreg, rtol=1e-14)
    for g, d in zip(gdreg, dreg):
        np.testing.assert_allclose(g, d, rtol=1e-12, atol=1e-14)


def test_declared_factor_changes_the_theta_gradient_only():
    # Declaring p(z1 | z2) changes a's gradient and nothing else: the φ-gradient and the
    # likelihood parameter c's are those of the undeclared target, on the same samples.
    declared, plain = TwoLevel(declare=True), TwoLevel(declare=False)
    out = {}
    for name, problem in [("declared", declared), ("plain", plain)]:
        out[name] = _gradients("gdreg", problem.target(), problem.surrogate, problem.variables)
    assert out["declared"][0] == out["plain"][0]
    declared_grads, plain_grads = out["declared"][1], out["plain"][1]
    for i in [0, 1, 2, 3, 4, 8]:  # m2 r2 w m1 r1, and c
        np.testing.assert_allclose(declared_grads[i], plain_grads[i], rtol=1e-12, atol=1e-14)
    for i in [5, 6, 7]:  # a, b, log s
        assert np.abs(declared_grads[i] - plain_grads[i]).max() > 1e-6


def test_keep_has_iwae_dreg_phi_gradient_on_a_hierarchical_surrogate():
    # "keep" leaves the conditional scores as IWAE-DReG's path terms: same φ-gradient,
    # same c-gradient (likelihood), another a-gradient (the declared prior factor).
    problem = TwoLevel()
    args = (problem.target(), problem.surrogate, problem.variables)
    loss_dreg, dreg = _gradients("iwae_dreg", *args)
    loss_keep, keep = _gradients(tge.estimators.GDReG("keep"), *args)
    loss_transform, transform = _gradients(tge.estimators.GDReG("transform"), *args)
    assert loss_keep == loss_dreg == loss_transform
    for i in [0, 1, 2, 3, 4, 8]:
        np.testing.assert_allclose(keep[i], dreg[i], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(keep[5], transform[5], rtol=1e-12)
    assert np.abs(keep[5] - dreg[5]).max() > 1e-6
    # "transform" changes the gradient of q(z2)'s parameters, which reach q(z1 | z2).
    assert np.abs(np.array(transform[:2]) - np.array(dreg[:2])).max() > 1e-6


def test_the_default_keeps_the_conditional_scores():
    # The measured choice (module docstring of tfp_gradest.estimators.gdreg): "keep".
    assert tge.estimators.get("gdreg").conditional_scores == "keep"
    assert tge.estimators.GDReG().get_config() == {"conditional_scores": "keep"}


def test_a_declared_factor_of_the_wrong_shape_is_refused():
    q = tfd.MultivariateNormalDiag(tf.zeros(2), tf.ones(2))

    def target(z):
        return tf.reduce_sum(tfd.Normal(0.0, 1.0).log_prob(z), axis=-1)

    target.latent_distributions = lambda z: {0: tfd.Normal(tf.zeros(2), 1.0)}  # not Independent
    with pytest.raises(ValueError, match=r"latent_distributions.*Independent.*shape \(6, 2\)"):
        tge.estimators.get("gdreg").loss(target, q, 2, 3, seed=1)
    target.latent_distributions = lambda z: [tfd.Normal(0.0, 1.0)]
    with pytest.raises(TypeError, match="must return a dict"):
        tge.estimators.get("gdreg").loss(target, q, 2, 3, seed=1)


def test_conditional_scores_is_validated():
    with pytest.raises(ValueError, match="Received: conditional_scores='drop'"):
        tge.estimators.GDReG("drop")
    assert tge.estimators.get(tge.estimators.serialize(tge.estimators.GDReG("keep"))) == (
        tge.estimators.GDReG("keep")
    )


# --- unbiasedness for θ and φ (K = 2, exact reference), and power -----------------------


@pytest.fixture(scope="module")
def exact():
    return TwoLevel().quadrature_iwae_gradient()


NUM_DRAWS, SAMPLE_SIZE, SEED = 2000, 8, 17


@pytest.mark.parametrize("conditional_scores", ["transform", "keep"])
def test_unbiased_for_every_parameter_at_k2(exact, conditional_scores):
    estimator = tge.estimators.GDReG(conditional_scores)
    z = _z_scores(_draws(TwoLevel(), estimator, 2, NUM_DRAWS, SAMPLE_SIZE, SEED), exact)
    assert np.max(np.abs(z)) < Z_THRESHOLD, f"z-scores ({' '.join(_NAMES)}): {np.round(z, 2)}"


def test_power_dropping_the_conditional_scores_is_detected(exact):
    z = _z_scores(
        _draws(TwoLevel(), _NaiveHierarchicalDReG(), 2, NUM_DRAWS, SAMPLE_SIZE, SEED), exact
    )
    assert np.max(np.abs(z[:5])) > Z_THRESHOLD, f"φ z-scores: {np.round(z[:5], 2)}"


def test_power_a_wrong_prior_identity_is_detected(exact):
    z = _z_scores(_draws(TwoLevel(), _PriorAtK1Identity(), 2, NUM_DRAWS, SAMPLE_SIZE, SEED), exact)
    assert abs(z[5]) > Z_THRESHOLD, f"a's z-score: {z[5]:.2f}"


# --- three levels, a latent with two parents: against IWAE's plain gradient ----------------


class ThreeLevel:
    """q: z3, z2 | z3, z1 | (z2, z3) (two parents); p: z3 → z2 → z1 → x with θ = (a2, a) in
    the two declared prior conditionals. No quadrature (6-d at K = 2): the reference is
    IWAE's plain autodiff gradient (unbiased by construction) with its standard error."""

    def __init__(self):
        values = [0.2, -0.2, 0.5, 0.4, -0.3, -0.6, 0.1, -0.1, -0.5, 0.8]
        self.variables = [tf.Variable(v, dtype=tf.float64) for v in values]

    def surrogate(self):
        m3, r3, b2, m2, r2, b1, m1, r1, _, _ = self.variables
        return tfd.JointDistributionSequential(
            [
                tfd.Normal(m3, tf.exp(r3)),
                lambda z3: tfd.Normal(b2 * z3 + m2, tf.exp(r2)),
                lambda z2, z3: tfd.Normal(b1 * z2 + 0.3 * z3 + m1, tf.exp(r1)),
            ]
        )

    def target(self):
        a2, a = self.variables[8:]

        def target_log_prob(z3, z2, z1):
            x = tf.constant(X, tf.float64)
            return (
                tfd.Normal(tf.constant(0.0, tf.float64), 1.0).log_prob(z3)
                + tfd.Normal(a2 * z3, 1.0).log_prob(z2)
                + tfd.Normal(a * z2, 1.0).log_prob(z1)
                + tfd.Normal(z1, 1.0).log_prob(x)
            )

        target_log_prob.latent_distributions = lambda z3, z2, z1: {
            1: tfd.Normal(a2 * z3, 1.0),
            2: tfd.Normal(a * z2, 1.0),
        }
        return target_log_prob

    def loss(self, estimator, k, sample_size, seed):
        estimator = tge.estimators.get(estimator)
        return estimator.loss(self.target(), self.surrogate(), sample_size, k, seed=seed)


@pytest.fixture(scope="module")
def three_level_reference():
    draws = _draws(ThreeLevel(), "iwae", 3, 4000, 8, 5)
    return [d.mean(axis=0) for d in draws], [d.std(ddof=1) / np.sqrt(len(d)) for d in draws]


def _three_level_z(estimator, reference):
    mean, se = reference
    draws = _draws(ThreeLevel(), estimator, 3, 2000, 8, 6)
    return np.array(
        [float(tge.diagnostics.bias_z_scores(d, m, s)) for d, m, s in zip(draws, mean, se)]
    )


def test_unbiased_on_three_levels_with_two_parents(three_level_reference):
    z = _three_level_z("gdreg", three_level_reference)
    assert np.max(np.abs(z)) < Z_THRESHOLD, f"z-scores: {np.round(z, 2)}"


def test_power_three_levels_detect_dropped_conditional_scores(three_level_reference):
    z = _three_level_z(_NaiveHierarchicalDReG(), three_level_reference)
    assert np.max(np.abs(z[:8])) > Z_THRESHOLD, f"φ z-scores: {np.round(z[:8], 2)}"


# --- the same unbiasedness test on TFP's JAX substrate -----------------------------------


def _jax_two_level(estimator, k, sample_size):
    """`(params, key) -> loss` of `TwoLevel` on JAX (the problem's model, built from `params`)."""
    tfp_jax = pytest.importorskip("tensorflow_probability.substrates.jax")
    problem = TwoLevel().problem

    def loss(params, key):
        surrogate = problem.build_surrogate(params, tfp_jax)
        target = problem.build_target(params, tfp_jax)
        return estimator.loss(target, surrogate, sample_size, k, seed=key)

    return loss


def test_unbiased_for_every_parameter_at_k2_on_jax(exact):
    jax = pytest.importorskip("jax")
    from . import jax_estimator_utils as ju

    with ju.precision("float64") as dtype:
        values = [v.numpy() for v in TwoLevel().variables]
        params = {n: jax.numpy.asarray(v, dtype) for n, v in zip(_NAMES, values)}
        loss = _jax_two_level(tge.estimators.get("gdreg"), 2, SAMPLE_SIZE)
        draws = ju.gradient_draws(loss, params, NUM_DRAWS, SEED)
    z = _z_scores([draws[n] for n in _NAMES], exact)
    assert np.max(np.abs(z)) < Z_THRESHOLD, f"z-scores ({' '.join(_NAMES)}): {np.round(z, 2)}"
