"""Multi-sample estimators: exact identities, unbiasedness (with power), variance,
numerics, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_gradest as tge
from tfp_gradest.problems import ToyGaussian

from .conftest import Z_THRESHOLD

tfd = tfp.distributions


def _grads(estimator, problem, k, seed, sample_size=3, variables=None):
    variables = variables or problem.variables + problem.model_variables
    with tf.GradientTape() as tape:
        loss = tge.estimators.get(estimator).loss(
            problem.target_log_prob, problem.surrogate, sample_size, k, seed=seed
        )
    return loss, [g.numpy() for g in tape.gradient(loss, variables)]


def _draws(estimator, problem, k, num_draws, sample_size, seed, variables):
    estimator = tge.estimators.get(estimator)
    return [
        d.numpy()
        for d in tge.diagnostics.gradient_draws(
            lambda s: estimator.loss(
                problem.target_log_prob, problem.surrogate, sample_size, k, seed=s
            ),
            variables,
            num_draws,
            seed,
        )
    ]


def _max_z(draws, reference, reference_se=None):
    """Largest |bias z-score| (`tge.diagnostics.bias_z_scores`) over all elements.

    A Monte Carlo reference's own standard error enters in quadrature.
    """
    reference_se = reference_se or [0.0] * len(draws)
    return max(
        float(np.max(np.abs(tge.diagnostics.bias_z_scores(d, ref, ref_se))))
        for d, ref, ref_se in zip(draws, reference, reference_se)
    )


# --- exact identities on the same samples -------------------------------------------


@pytest.mark.parametrize(
    "a,b,k",
    [
        ("iwae_dreg", "stl", 1),
        (tge.estimators.DReG(0.0), "iwae_dreg", 8),
        (tge.estimators.DReG(1.0), "rws_dreg", 8),
        ("iwae", "reparameterization", 1),
    ],
    ids=[
        "iwae_dreg@K=1==stl",
        "dreg(0)==iwae_dreg",
        "dreg(1)==rws_dreg",
        "iwae@K=1==reparameterization",
    ],
)
def test_exact_identities(a, b, k):
    problem = ToyGaussian(dim=5, perturbation=0.3, dtype=tf.float64)
    loss_a, grads_a = _grads(a, problem, k, seed=4)
    loss_b, grads_b = _grads(b, problem, k, seed=4)
    # Exact in the mathematics; the last bit can differ (log-sum-exp of one term).
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-14)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["iwae_dreg", "rws", "rws_dreg", "dreg", "iwae_stl", "vimco"])
def test_model_parameters_get_the_iwae_gradient_on_the_same_samples(name):
    # The θ-gradient of every IWAE-bound estimator is Σ w̃ ∇θ log p, never w̃².
    problem = ToyGaussian(dim=5, perturbation=0.3, dtype=tf.float64)
    reference = _grads("iwae", problem, 8, seed=6, variables=problem.model_variables)[1]
    grads = _grads(name, problem, 8, seed=6, variables=problem.model_variables)[1]
    np.testing.assert_allclose(grads[0], reference[0], rtol=1e-10, atol=1e-12)


def test_estimators_differ_in_the_surrogate_gradient_only():
    problem = ToyGaussian(dim=5, perturbation=0.3, dtype=tf.float64)
    values = {
        n: float(_grads(n, problem, 8, seed=2)[0])
        for n in ["iwae", "iwae_dreg", "rws", "vimco", "iwae_stl"]
    }
    assert len(set(values.values())) == 1, values
    assert not np.allclose(
        _grads("iwae", problem, 8, 2)[1][0], _grads("iwae_dreg", problem, 8, 2)[1][0]
    )


# --- K = 2: every estimator against the exact bound by Gauss-Hermite quadrature -----


def _quadrature_objectives(problem, num_nodes=48):
    """Exact `E[L_2]` (IWAE, K=2) and `E[L_JVI]` (K=2) for a 1-d problem, as differentiable Tensors.

    With `z = loc + σ ε`, both are expectations over `ε₁, ε₂ ~ N(0, 1)`:
    tensor-product Gauss-Hermite quadrature with `num_nodes²` points, exact for
    polynomials of degree `2 num_nodes - 1` per axis, is exact here to far below
    Monte Carlo error. For K = 2, `L_JVI = 2 L_2 - (log w₁ + log w₂)/2`, whose
    expectation is `2 E[L_2] - ELBO`.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    weights = tf.constant(weights / weights.sum(), problem.dtype)
    q = problem.surrogate
    z = tf.convert_to_tensor(q.loc) + q.stddev() * tf.constant(nodes[:, None], problem.dtype)
    log_w = problem.target_log_prob(z) - q.log_prob(z)
    pairs = tf.reduce_logsumexp(tf.stack(tf.meshgrid(log_w, log_w)), axis=0) - np.log(2.0)
    iwae = tf.reduce_sum(weights[:, None] * weights[None, :] * pairs)
    elbo = tf.reduce_sum(weights * log_w)
    return {"iwae": iwae, "jvi": 2.0 * iwae - elbo}


def _quadrature_gradients(problem, variables):
    with tf.GradientTape(persistent=True) as tape:
        objectives = _quadrature_objectives(problem)
    return {k: [-g.numpy() for g in tape.gradient(v, variables)] for k, v in objectives.items()}


K2_CASES = [
    # (estimator, objective, which variables its gradient is unbiased for)
    ("iwae", "iwae", "all"),
    ("iwae_dreg", "iwae", "all"),
    ("vimco", "iwae", "all"),
    ("rws", "iwae", "model"),
    ("rws_dreg", "iwae", "model"),
    (tge.estimators.DReG(0.5), "iwae", "model"),
    ("jvi", "jvi", "all"),
    ("jvi_dreg", "jvi", "all"),
]


@pytest.mark.parametrize("estimator,objective,which", K2_CASES, ids=lambda c: str(c))
def test_unbiased_against_quadrature_at_k2(estimator, objective, which):
    problem = ToyGaussian(dim=1, perturbation=0.3, dtype=tf.float64)
    variables = (
        problem.model_variables if which == "model" else problem.variables + problem.model_variables
    )
    exact = _quadrature_gradients(problem, variables)[objective]
    z = _max_z(_draws(estimator, problem, 2, 4000, 8, 21, variables), exact)
    assert z < Z_THRESHOLD, f"max |z| = {z:.2f}"


def test_power_quadrature_test_rejects_a_biased_estimator_at_k2():
    # Same test, an estimator whose φ-gradient is biased for K > 1.
    problem = ToyGaussian(dim=1, perturbation=0.3, dtype=tf.float64)
    exact = _quadrature_gradients(problem, problem.variables)["iwae"]
    z = _max_z(_draws("iwae_stl", problem, 2, 4000, 8, 21, problem.variables), exact)
    assert z > Z_THRESHOLD, f"IWAE-STL passed (max |z| = {z:.2f})"


# --- K = 8, D = 20 (the DReG paper's toy): against a large-sample reference ---------


@pytest.fixture(scope="module")
def toy_reference():
    """The IWAE and JVI φ-gradients at K = 8, each from 1,000,000 objectives.

    Computed once with a fixed seed by the plain pathwise estimators (autodiff of
    the bound itself; no stop-gradients), which the quadrature test above checks
    independently at K = 2. The reference's own standard error enters the test.
    """
    problem = ToyGaussian(dtype=tf.float64)
    reference = {}
    for name in ["iwae", "jvi"]:
        draws = _draws(name, problem, 8, 500, 2000, 99, problem.variables)
        reference[name] = (
            [d.mean(axis=0) for d in draws],
            [d.std(axis=0, ddof=1) / np.sqrt(d.shape[0]) for d in draws],
        )
    return problem, reference


@pytest.mark.parametrize(
    "estimator,objective", [("iwae_dreg", "iwae"), ("vimco", "iwae"), ("jvi_dreg", "jvi")]
)
def test_unbiased_against_a_large_sample_reference_at_k8(toy_reference, estimator, objective):
    problem, reference = toy_reference
    mean, se = reference[objective]
    z = _max_z(_draws(estimator, problem, 8, 2000, 16, 1, problem.variables), mean, se)
    assert z < Z_THRESHOLD, f"max |z| = {z:.2f}"


def test_power_iwae_stl_bias_is_detected_at_k8(toy_reference):
    problem, reference = toy_reference
    mean, se = reference["iwae"]
    z = _max_z(_draws("iwae_stl", problem, 8, 2000, 16, 1, problem.variables), mean, se)
    assert z > Z_THRESHOLD, f"IWAE-STL's bias went undetected (max |z| = {z:.2f})"


# --- variance -----------------------------------------------------------------------


def _mean_variance(estimator, problem, k, num_draws=1000):
    draws = _draws(estimator, problem, k, num_draws, 1, 5, problem.variables)
    return float(np.mean(np.concatenate([d.var(axis=0, ddof=1).ravel() for d in draws])))


def test_iwae_dreg_variance_is_at_least_5x_lower_than_iwae_at_k64():
    problem = ToyGaussian(dtype=tf.float64)
    ratio = _mean_variance("iwae", problem, 64) / _mean_variance("iwae_dreg", problem, 64)
    print(f"phi-gradient variance IWAE / IWAE-DReG at K=64: {ratio:.1f}")
    # Each variance is a mean over 40 elements of 1000-draw sample variances
    # (relative standard error well under 5%), so a measured ratio above 5 is real.
    assert ratio >= 5.0


def test_zero_variance_at_the_exact_posterior():
    # Zero in exact arithmetic; 1e-20 is (1e-10)²: float64 rounding of gradients of
    # size ~1 leaves variances near 1e-30. IWAE's measured variance here is ~0.1, so
    # 1e-3 separates the two by orders of magnitude either way.
    problem = ToyGaussian(dim=5, perturbation=0.0, q_scale=np.sqrt(0.5), dtype=tf.float64)
    assert _mean_variance("iwae_dreg", problem, 8, 200) < 1e-20
    assert _mean_variance("rws_dreg", problem, 8, 200) < 1e-20
    assert _mean_variance("iwae", problem, 8, 200) > 1e-3


# --- numerics -----------------------------------------------------------------------


def _standard_normal_surrogate():
    loc = tf.Variable(tf.zeros(2, tf.float64))
    return loc, tfd.MultivariateNormalDiag(loc, tf.ones(2, tf.float64))


TARGETS = {
    "log_w_plus_1e4": lambda z: (
        tfd.MultivariateNormalDiag(tf.ones(2, tf.float64)).log_prob(z) + 1e4
    ),
    "log_w_minus_1e4": lambda z: (
        tfd.MultivariateNormalDiag(tf.ones(2, tf.float64)).log_prob(z) - 1e4
    ),
    "some_minus_inf": lambda z: tf.where(
        z[..., 0] > 0.5,
        tf.constant(-np.inf, tf.float64),
        tfd.MultivariateNormalDiag(tf.ones(2, tf.float64)).log_prob(z),
    ),
}


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", tge.estimators.names())
def test_finite_losses_and_gradients_for_extreme_log_weights(name, target):
    estimator = tge.estimators.get(name)
    k = 1 if estimator.max_importance_sample_size == 1 else 16
    s = 4
    if target == "some_minus_inf" and k == 1:
        pytest.skip(
            "the ELBO itself is -inf when a single sample has zero target density: loss +inf, "
            "see test_estimator_contract.py::test_zero_density_samples_give_infinite_loss_..."
        )
    loc, q = _standard_normal_surrogate()

    @tf.function(jit_compile=True, autograph=False)
    def step():
        with tf.GradientTape() as tape:
            loss = estimator.loss(TARGETS[target], q, s, k, seed=3)
        return loss, tape.gradient(loss, loc)

    loss, grad = step()
    assert np.isfinite(loss) and np.all(np.isfinite(grad)), (float(loss), grad)


# A NaN from the target must reach the gradient (never a silent zero that stalls
# training); sqrt of a negative number is NaN in value and in gradient.
NAN_CASES = [("stl", 1)] + [
    (name, k) for name in ["iwae_dreg", "dreg", "rws_dreg", "iwae_stl"] for k in (1, 8)
]


@pytest.mark.parametrize("where", ["every_sample", "some_samples"])
@pytest.mark.parametrize("name,k", NAN_CASES, ids=lambda c: str(c))
def test_a_nan_target_gives_nan_gradients_not_zeros(name, k, where):
    loc, q = _standard_normal_surrogate()
    theta = tf.Variable(tf.constant(1.0, tf.float64))
    shift = 50.0 if where == "every_sample" else 0.5  # NaN where z_0 < shift

    def target(z):
        normal = tfd.MultivariateNormalDiag(theta * tf.ones(2, tf.float64))
        return normal.log_prob(z) + tf.sqrt(z[..., 0] - shift)

    with tf.GradientTape() as tape:
        loss = tge.estimators.get(name).loss(target, q, 4, k, seed=3)
    for grad in tape.gradient(loss, [loc, theta]):
        assert np.any(np.isnan(grad)), (name, k, float(loss), grad)
    assert np.isnan(loss)


# --- misuse -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iwae_dreg", "rws_dreg", "dreg", "iwae_stl", "jvi_dreg", "iwae"])
def test_path_estimators_reject_non_reparameterized_surrogates(name):
    q = tfd.Bernoulli(logits=tf.Variable(0.0), dtype=tf.float32)
    with pytest.raises(ValueError, match="reparameterized"):
        tge.estimators.get(name).loss(lambda z: -z, q, 2, 4)


@pytest.mark.parametrize("name", ["vimco", "jvi", "jvi_dreg"])
def test_leave_one_out_estimators_need_two_samples(name):
    problem = ToyGaussian(dim=2)
    with pytest.raises(ValueError, match="importance_sample_size"):
        tge.estimators.get(name).loss(problem.target_log_prob, problem.surrogate, 2, 1)


def test_score_function_multisample_estimators_work_on_discrete_surrogates():
    logits = tf.Variable([0.2, -0.4])
    q = tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 1)
    for name in ["vimco", "rws"]:
        with tf.GradientTape() as tape:
            loss = tge.estimators.get(name).loss(lambda z: tf.reduce_sum(z, -1), q, 2, 4, seed=1)
        grad = tape.gradient(loss, logits)
        assert grad is not None and np.all(np.isfinite(grad))


def test_dreg_alpha_and_jvi_order_are_validated():
    with pytest.raises(ValueError, match="alpha"):
        tge.estimators.DReG(1.5)
    with pytest.raises(ValueError, match="order"):
        tge.estimators.JVI(order=2)


# --- one sample of density in an objective (issue 21: the -inf check of VIMCO and JVI) --


def _one_sample_of_density(k):
    """`q = N(loc, I_2)` at `loc = 0`, a target `N(1, I)` cut to zero density where
    `z_0 > cut`, the cut chosen so that exactly one of the `k` draws of seed [0, 1] keeps
    density; returns the pieces and that draw."""
    loc = tf.Variable(tf.zeros(2, tf.float64))
    q = tfd.MultivariateNormalDiag(loc, tf.ones(2, tf.float64))
    inside = tfd.MultivariateNormalDiag(tf.ones(2, tf.float64))
    seed = tf.constant([0, 1], tf.int32)
    sample_seed, _ = tfp.random.split_seed(seed, n=2)  # as every estimator's `loss` splits it
    z = q.sample(k, seed=sample_seed).numpy()
    first, second = np.sort(z[:, 0])[:2]
    cut = (first + second) / 2

    def target(z):
        return tf.where(z[..., 0] > cut, tf.constant(-np.inf, tf.float64), inside.log_prob(z))

    return loc, q, target, seed, z[np.argmin(z[:, 0])]


@pytest.mark.parametrize("name", ["jvi", "jvi_dreg", "vimco"])
def test_one_sample_of_density_gives_the_exact_finite_gradient(name):
    # JVI: L = K·L_K - (K-1)/K·Σ_i L^{(-i)}. With only w_a > 0, L^{(-a)} = log 0 = -inf, so
    # the estimate is +inf (the loss -inf: JVI is not a bound and diverges here), but that
    # term is constant, so the gradient is that of the others: every L^{(-i)}, i ≠ a, and
    # L_K are log w_a + const, so  ∇ loss = -(K - (K-1)²/K) ∇ log w_a.  Here
    # ∇_loc log w_a = ∇_z log p(z_a) = 1 - z_a (pathwise), and the path part alone,
    # ∇_z log p - ∇_z log q = 1 - loc = 1 (DReG). VIMCO: the IWAE bound is finite, and so
    # is its gradient. (JVI-DReG gave NaN and JVI a zero gradient before.)
    k = 4
    loc, q, target, seed, z_a = _one_sample_of_density(k)
    estimator = tge.estimators.get(name)

    @tf.function(jit_compile=False, autograph=False)
    def step():
        with tf.GradientTape() as tape:
            loss = estimator.loss(target, q, 1, k, seed=seed)
        return loss, tape.gradient(loss, loc)

    loss, grad = step()
    assert np.all(np.isfinite(grad)), grad
    factor = k - (k - 1) ** 2 / k
    if name == "vimco":
        assert np.isfinite(loss)
    else:
        assert loss == -np.inf
        expected = -factor * (1.0 - z_a) if name == "jvi" else -factor * np.ones(2)
        np.testing.assert_allclose(grad, expected, rtol=1e-12)
