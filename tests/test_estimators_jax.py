"""The estimators' statistical evidence on TFP's JAX substrate (issue 24, item 5).

The TensorFlow suite's checks (test_elbo_estimators.py, test_score_function.py,
test_multisample.py), on the same problems with the same numbers, draw counts, sample
sizes and tolerances, run here through the JAX call: the surrogate is a
`tensorflow_probability.substrates.jax` distribution built from a parameter pytree inside
the differentiated function, the target closes over the model's parameters, and the seed
is a JAX PRNG key. Every draw set is ONE jitted `jax.vmap` of `jax.grad` over keys, so
every loss is traced and compiled by XLA. float64 runs under
`jax.experimental.enable_x64()` (a context manager: the global flag is never flipped).

Statistical checks assert `|bias z| < Z_THRESHOLD` (conftest: ~6e-5 false alarms per
element, fixed seeds) against exact gradients (closed form, enumeration or Gauss-Hermite
quadrature) or a large-sample reference whose standard error enters in quadrature; each
has a power check that fails for a deliberately wrong estimator.
"""

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("tensorflow_probability.substrates.jax")


import tfp_gradest as tge  # noqa: E402

from . import jax_estimator_utils as ju  # noqa: E402
from .conftest import Z_THRESHOLD  # noqa: E402

DTYPES = ["float32", "float64"]


@pytest.fixture(autouse=True)
def _global_jax_config_is_left_alone():
    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    yield
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before


class _EntropyBlind:
    """Deliberately wrong: the pathwise gradient of `E_q[log p]` only (drops the entropy).

    `Reparameterization(analytic_entropy=True)`'s loss is `-(log p(z) + H[q])`; adding
    `H[q]` back leaves `-log p(z)`, differentiated through `z` (as the TF suite's
    `_EntropyBlind`)."""

    def loss(self, target_log_prob_fn, surrogate_posterior, *args, **kwargs):
        estimator = tge.estimators.Reparameterization(analytic_entropy=True)
        loss = estimator.loss(target_log_prob_fn, surrogate_posterior, *args, **kwargs)
        return loss + surrogate_posterior.entropy()


class _SelfIncludingBaseline:
    """Deliberately wrong: a score-function baseline that includes the sample it corrects.

    With `b = mean_j f_j` over the S samples, `f_s - b = (1 - 1/S)(f_s - b_s)` with `b_s`
    the leave-one-out baseline, so that estimator's score term is `(1 - 1/S)` times the
    leave-one-out estimator's: biased by `1/S` of the gradient (the TF suite overrides the
    baseline itself, a private hook; here the whole leave-one-out loss is scaled, which
    also scales its direct term, whose mean is zero)."""

    def loss(self, target_log_prob_fn, surrogate_posterior, sample_size, *args, **kwargs):
        loss = tge.estimators.ScoreFunction("leave_one_out").loss(
            target_log_prob_fn, surrogate_posterior, sample_size, *args, **kwargs
        )
        return (1.0 - 1.0 / sample_size) * loss


class _TfpDoublyReparameterized:
    """TFP-JAX's `DOUBLY_REPARAMETERIZED` with its hand-built stopped surrogate: its φ-gradient
    is IWAE-DReG's, but model parameters get `Σ w̃² ∇θ log p` (biased for K > 1)."""

    def loss(self, target_log_prob_fn, surrogate_posterior, sample_size, k, seed):
        from tensorflow_probability.substrates import jax as tfp

        stopped = jax.tree_util.tree_map(jax.lax.stop_gradient, surrogate_posterior)
        return tfp.vi.monte_carlo_variational_loss(
            target_log_prob_fn, surrogate_posterior, sample_size=sample_size,
            importance_sample_size=k, seed=seed,
            gradient_estimator=tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED,
            stopped_surrogate_posterior=stopped,
        )  # fmt: skip


def _estimator(name):
    return tge.estimators.get(name) if isinstance(name, str) else name


# --- the references are the TF suite's -------------------------------------------------------


def test_the_exact_gradients_are_the_tensorflow_suite_s():
    # The JAX problems' exact gradients (closed-form KL, Gauss-Hermite quadrature) equal
    # those the TF suite tests against, on the same problems (TensorFlow's autodiff of
    # tfp_gradest.problems and of test_multisample.py's quadrature).
    import tensorflow as tf

    from tfp_gradest import problems

    from .conftest import exact_gradient
    from .test_multisample import _quadrature_gradients

    gaussian = problems.CorrelatedGaussian(dtype=tf.float64)
    expected = exact_gradient(gaussian.exact_objective, gaussian.variables)
    toy = problems.ToyGaussian(dim=1, perturbation=0.3, dtype=tf.float64)
    expected_toy = _quadrature_gradients(toy, toy.variables + toy.model_variables)
    with ju.precision("float64"):
        jax_gaussian = ju.CorrelatedGaussian()
        got = jax_gaussian.exact_gradient(jax_gaussian.parameters("float64"))
        jax_toy = ju.ToyGaussian(dim=1, perturbation=0.3)
        got_toy = jax_toy.quadrature_gradients(jax_toy.parameters("float64"))
    for key, want in zip(["loc", "log_scale"], expected):
        np.testing.assert_allclose(got[key], want, rtol=1e-12)
    for objective in ["iwae", "jvi"]:
        for key, want in zip(["a", "b", "mu"], expected_toy[objective]):
            np.testing.assert_allclose(got_toy[objective][key], want, rtol=1e-10, atol=1e-14)


# --- the ELBO: CorrelatedGaussian, closed-form gradient (test_elbo_estimators.py) -----------

ELBO_DRAWS, ELBO_SAMPLE_SIZE, ELBO_SEED = 2000, 4, 11

# ScoreFunction("moving_average") keeps state between calls and is refused on JAX
# (tests/test_substrate.py); the other estimators of the TF suite's list are here.
UNBIASED_ELBO = {
    "reparameterization": "reparameterization",
    "reparameterization_analytic_entropy": tge.estimators.Reparameterization(True),
    "stl": "stl",
    "score_function": "score_function",
    "score_function_leave_one_out": tge.estimators.ScoreFunction("leave_one_out"),
}


def _elbo_z(estimator, dtype):
    problem = ju.CorrelatedGaussian()
    with ju.precision(dtype):
        params = problem.parameters(dtype)
        loss = ju.estimator_loss(_estimator(estimator), problem, ELBO_SAMPLE_SIZE)
        draws = ju.gradient_draws(loss, params, ELBO_DRAWS, ELBO_SEED)
        assert all(d.dtype == np.dtype(dtype) for d in draws.values())
        return ju.max_abs_z(draws, problem.exact_gradient(params))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNBIASED_ELBO))
def test_unbiased_for_the_exact_elbo_gradient(name, dtype):
    z = _elbo_z(UNBIASED_ELBO[name], dtype)
    assert z < Z_THRESHOLD, f"{name}: max |bias z-score| {z:.2f}"


def test_power_the_elbo_test_rejects_a_biased_estimator():
    z = _elbo_z(_EntropyBlind(), "float64")
    assert z > Z_THRESHOLD, f"a gradient that ignores the entropy passed (max |z| {z:.2f})"


@pytest.mark.parametrize("dtype", DTYPES)
def test_stl_has_zero_variance_when_q_equals_the_target(dtype):
    problem = ju.CorrelatedGaussian()
    variances = {}
    with ju.precision(dtype):
        params = problem.parameters(dtype)
        # A target that is exactly the surrogate at `params`, built from their values.
        target = problem.surrogate(params).log_prob

        for name in ["stl", "reparameterization"]:
            estimator = tge.estimators.get(name)

            def loss(p, key, e=estimator):
                return e.loss(target, problem.surrogate(p), 4, seed=key)

            draws = ju.gradient_draws(loss, params, 200, 0)
            variances[name] = max(float(np.max(np.var(d, axis=0))) for d in draws.values())
    # Zero up to rounding: XLA may fuse p's and q's identical formulas differently, so
    # allow gradients of size ~1 to differ by 10 ulps (as on TensorFlow).
    assert variances["stl"] < (10 * np.finfo(dtype).eps) ** 2, variances
    # The reparameterisation gradient keeps the score term, of order-one variance here.
    assert variances["reparameterization"] > 1e-3, variances


# --- the score function on Bernoulli bits, exact by enumeration (test_score_function.py) ----

SF_DRAWS, SF_SAMPLE_SIZE, SF_SEED = 4000, 4, 3


@functools.cache
def _bernoulli_draws(estimator, dtype):
    problem = ju.BernoulliProblem()
    with ju.precision(dtype):
        params = problem.parameters(dtype)
        loss = ju.estimator_loss(estimator, problem, SF_SAMPLE_SIZE)
        return ju.gradient_draws(loss, params, SF_DRAWS, SF_SEED), problem.exact_gradient(params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("baseline", [None, "leave_one_out"])  # no moving average on JAX
def test_bernoulli_unbiased_with_each_baseline(baseline, dtype):
    z = ju.max_abs_z(*_bernoulli_draws(tge.estimators.ScoreFunction(baseline), dtype))
    assert z < Z_THRESHOLD, f"baseline={baseline}: max |z| {z:.2f}"


def test_power_bernoulli_test_rejects_a_baseline_that_sees_its_own_sample():
    z = ju.max_abs_z(*_bernoulli_draws(_SelfIncludingBaseline(), "float64"))
    assert z > Z_THRESHOLD, f"a biased baseline passed (max |z| {z:.2f})"


def test_baselines_reduce_variance():
    variance = {
        baseline: float(
            np.mean(
                np.var(
                    _bernoulli_draws(tge.estimators.ScoreFunction(baseline), "float64")[0][
                        "logits"
                    ],
                    axis=0,
                )
            )
        )
        for baseline in [None, "leave_one_out"]
    }
    # 4000 draws: a variance's relative standard error is ~sqrt(2/4000) ~ 2%, so a 5x
    # margin cannot be noise (as on TensorFlow).
    assert variance[None] > 5.0 * variance["leave_one_out"], variance


# --- multi-sample estimators: ToyGaussian (test_multisample.py) ------------------------------


TOY5 = ju.ToyGaussian(dim=5, perturbation=0.3)


@functools.cache
def _toy_value_and_grads(name, problem, k, key_seed, sample_size=3, dtype="float64"):
    with ju.precision(dtype):
        params = problem.parameters(dtype)
        loss = ju.estimator_loss(_estimator(name), problem, sample_size, k)
        value, grads = jax.jit(jax.value_and_grad(loss))(params, jax.random.PRNGKey(key_seed))
        return float(value), jax.tree_util.tree_map(np.asarray, grads)


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
def test_exact_identities_for_the_same_key(a, b, k):
    problem = TOY5
    loss_a, grads_a = _toy_value_and_grads(a, problem, k, key_seed=4)
    loss_b, grads_b = _toy_value_and_grads(b, problem, k, key_seed=4)
    # Exact in the mathematics; the last bit can differ (log-sum-exp of one term).
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-14)
    for key in grads_a:
        np.testing.assert_allclose(grads_a[key], grads_b[key], rtol=1e-12, atol=1e-12)


def test_power_the_identities_see_a_different_estimator():
    # The same comparison tells IWAE-DReG from IWAE (the φ-gradients differ on one key).
    problem = TOY5
    _, dreg = _toy_value_and_grads("iwae_dreg", problem, 8, key_seed=6)
    _, iwae = _toy_value_and_grads("iwae", problem, 8, key_seed=6)
    assert not np.allclose(dreg["a"], iwae["a"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["iwae_dreg", "rws", "rws_dreg", "dreg", "iwae_stl", "vimco"])
def test_model_parameters_get_the_iwae_gradient_on_the_same_samples(name):
    # The θ-gradient of every IWAE-bound estimator is Σ w̃ ∇θ log p, never w̃² (TFP's DReG).
    problem = TOY5
    _, reference = _toy_value_and_grads("iwae", problem, 8, key_seed=6)
    _, grads = _toy_value_and_grads(name, problem, 8, key_seed=6)
    np.testing.assert_allclose(grads["mu"], reference["mu"], rtol=1e-10, atol=1e-12)


def test_power_tfp_jax_dreg_gives_model_parameters_another_gradient():
    # The check above fails for TFP-JAX's DOUBLY_REPARAMETERIZED (w̃² on θ), while its
    # φ-gradient is IWAE-DReG's on the same key (the samples are laid out alike).
    problem = TOY5
    _, reference = _toy_value_and_grads("iwae", problem, 8, key_seed=6)
    _, ours = _toy_value_and_grads("iwae_dreg", problem, 8, key_seed=6)
    _, tfps = _toy_value_and_grads(_TfpDoublyReparameterized(), problem, 8, key_seed=6)
    assert not np.allclose(tfps["mu"], reference["mu"], rtol=1e-3)
    for key in problem.surrogate_keys:
        np.testing.assert_allclose(tfps[key], ours[key], rtol=1e-10, atol=1e-12)


def test_estimators_differ_in_the_surrogate_gradient_only():
    # The same key (the draws of the θ test above): the same loss value, to rounding (TF's
    # eager ops give it bit for bit; XLA fuses each estimator's program differently, so the
    # last bit of an O(10) value may differ), and different φ-gradients.
    problem = TOY5
    results = {
        n: _toy_value_and_grads(n, problem, 8, key_seed=6)
        for n in ["iwae", "iwae_dreg", "rws", "vimco", "iwae_stl"]
    }
    values = np.array([value for value, _ in results.values()])
    np.testing.assert_allclose(values, values[0], rtol=4 * np.finfo(np.float64).eps)
    assert not np.allclose(results["iwae"][1]["a"], results["iwae_dreg"][1]["a"])


# --- K = 2: every estimator against the exact bound by Gauss-Hermite quadrature -------------

K2_DRAWS, K2_SAMPLE_SIZE, K2_SEED = 4000, 8, 21
MODEL_KEYS = ("mu",)
ALL_KEYS = ("a", "b", "mu")
K2_CASES = [
    # (estimator, objective, which parameters its gradient is unbiased for)
    ("iwae", "iwae", ALL_KEYS),
    ("iwae_dreg", "iwae", ALL_KEYS),
    ("vimco", "iwae", ALL_KEYS),
    ("rws", "iwae", MODEL_KEYS),
    ("rws_dreg", "iwae", MODEL_KEYS),
    (tge.estimators.DReG(0.5), "iwae", MODEL_KEYS),
    ("jvi", "jvi", ALL_KEYS),
    ("jvi_dreg", "jvi", ALL_KEYS),
]


TOY1 = ju.ToyGaussian(dim=1, perturbation=0.3)


@functools.cache
def _quadrature_gradients(dtype):
    with ju.precision(dtype):
        return TOY1.quadrature_gradients(TOY1.parameters(dtype))


def _k2_z(estimator, objective, which, dtype="float64"):
    problem = TOY1
    exact = _quadrature_gradients(dtype)[objective]
    with ju.precision(dtype):
        params = problem.parameters(dtype)
        loss = ju.estimator_loss(_estimator(estimator), problem, K2_SAMPLE_SIZE, 2)
        draws = ju.gradient_draws(loss, params, K2_DRAWS, K2_SEED)
    return ju.max_abs_z(draws, {k: exact[k] for k in which})


@pytest.mark.parametrize("estimator,objective,which", K2_CASES, ids=lambda c: str(c))
def test_unbiased_against_quadrature_at_k2(estimator, objective, which):
    z = _k2_z(estimator, objective, which)
    assert z < Z_THRESHOLD, f"max |z| = {z:.2f}"


def test_unbiased_against_quadrature_at_k2_in_float32():
    z = _k2_z("iwae_dreg", "iwae", ALL_KEYS, "float32")
    assert z < Z_THRESHOLD, f"max |z| = {z:.2f}"


def test_power_quadrature_test_rejects_a_biased_estimator_at_k2():
    # Same test, an estimator whose φ-gradient is biased for K > 1.
    z = _k2_z("iwae_stl", "iwae", ("a", "b"))
    assert z > Z_THRESHOLD, f"IWAE-STL passed (max |z| = {z:.2f})"


def test_power_quadrature_test_rejects_the_w_squared_model_gradient_at_k2():
    # θ is exact under IWAE-DReG (c = w̃ above); TFP's DReG gives θ Σ w̃² ∇θ log p.
    z = _k2_z(_TfpDoublyReparameterized(), "iwae", MODEL_KEYS)
    assert z > Z_THRESHOLD, f"TFP's w̃² θ-gradient passed (max |z| = {z:.2f})"


# --- K = 8, D = 20 (the DReG paper's toy): against a large-sample reference -----------------


@pytest.fixture(scope="module")
def toy_reference():
    """The IWAE and JVI φ-gradients at K = 8, each from 100,000 objectives (50 draws of
    S = 2000), by the plain pathwise estimators (no stop-gradients), which the quadrature
    test above checks independently at K = 2. The reference's own standard error enters.

    The TF suite uses 1,000,000 objectives; on one core that costs ~10 s per estimator
    here. With 100,000 the reference's standard error dominates the z-scores'
    denominators (IWAE's variance is far above IWAE-DReG's), yet IWAE-STL's bias still
    scores |z| ~ 22 (~41 with 1,000,000), far beyond Z_THRESHOLD (measured with TFP-JAX's
    estimators standing in, before the JAX path existed).
    """
    problem = ju.ToyGaussian()
    reference = {}
    with ju.precision("float64"):
        params = problem.parameters("float64")
        for name in ["iwae", "jvi"]:
            loss = ju.estimator_loss(_estimator(name), problem, 2000, 8)
            draws = ju.gradient_draws(loss, params, 50, 99, batch_size=10, compile_fast=False)
            reference[name] = (
                {k: draws[k].mean(axis=0) for k in problem.surrogate_keys},
                {
                    k: draws[k].std(axis=0, ddof=1) / np.sqrt(draws[k].shape[0])
                    for k in problem.surrogate_keys
                },
            )
    return problem, reference


def _k8_z(toy_reference, estimator, objective):
    problem, reference = toy_reference
    with ju.precision("float64"):
        loss = ju.estimator_loss(_estimator(estimator), problem, 16, 8)
        # Run time matters here (S K D = 2560 per draw): XLA's full optimisation.
        draws = ju.gradient_draws(loss, problem.parameters("float64"), 2000, 1, compile_fast=False)
    return ju.max_abs_z(draws, *reference[objective])


@pytest.mark.parametrize(
    "estimator,objective", [("iwae_dreg", "iwae"), ("vimco", "iwae"), ("jvi_dreg", "jvi")]
)
def test_unbiased_against_a_large_sample_reference_at_k8(toy_reference, estimator, objective):
    z = _k8_z(toy_reference, estimator, objective)
    assert z < Z_THRESHOLD, f"max |z| = {z:.2f}"


def test_power_iwae_stl_bias_is_detected_at_k8(toy_reference):
    z = _k8_z(toy_reference, "iwae_stl", "iwae")
    assert z > Z_THRESHOLD, f"IWAE-STL's bias went undetected (max |z| = {z:.2f})"


# --- variance and SNR -----------------------------------------------------------------------


def _phi_draws(name, problem, k, num_draws, seed=5):
    """`[num_draws, 2 D]` φ-gradients (a, b) of single objectives (S = 1), float64."""
    with ju.precision("float64"):
        loss = ju.estimator_loss(_estimator(name), problem, 1, k)
        params = problem.parameters("float64")
        # At K >= 64 the run time matters: XLA's full optimisation.
        draws = ju.gradient_draws(loss, params, num_draws, seed, compile_fast=k < 64)
    return np.concatenate([draws[key] for key in problem.surrogate_keys], axis=1)


def _mean_variance(name, problem, k, num_draws=1000):
    return float(np.mean(np.var(_phi_draws(name, problem, k, num_draws), axis=0, ddof=1)))


def test_iwae_dreg_variance_is_at_least_5x_lower_than_iwae_at_k64():
    problem = ju.ToyGaussian()
    ratio = _mean_variance("iwae", problem, 64) / _mean_variance("iwae_dreg", problem, 64)
    # Each variance is a mean over 40 elements of 1000-draw sample variances (relative
    # standard error well under 5%), so a measured ratio above 5 is real.
    assert ratio >= 5.0, ratio


def test_zero_variance_at_the_exact_posterior():
    # Zero in exact arithmetic; 1e-20 is (1e-10)²: float64 rounding of gradients of size ~1
    # leaves variances near 1e-30. IWAE's variance here is ~0.1, far above 1e-3.
    problem = ju.ToyGaussian(dim=5, perturbation=0.0, q_scale=np.sqrt(0.5))
    assert _mean_variance("iwae_dreg", problem, 8, 200) < 1e-20
    assert _mean_variance("rws_dreg", problem, 8, 200) < 1e-20
    assert _mean_variance("iwae", problem, 8, 200) > 1e-3


SNR_KS, SNR_DRAWS = (30, 300), 1000


def test_snr_slopes_iwae_falls_and_iwae_dreg_rises_with_k():
    # Rainforth et al. (2018): the φ-SNR of IWAE falls as K^-1/2; Tucker et al. (2019):
    # IWAE-DReG's rises as K^1/2. The laws are asymptotic (DReG's is nearly flat at small
    # K), so the slope is taken over K = 30..300, as benchmarks/snr_scaling.py fits it
    # over K >= 30. IWAE's signal is the IWAE-DReG mean (both are unbiased for the same
    # gradient, and IWAE's own mean cannot resolve it), its noise its own. Measured with
    # TFP-JAX's estimators on 4 seeds: slopes -0.45..-0.53 and +0.45..+0.52 (sd ~0.04),
    # so ±0.3 leaves ~4 sd of margin, and each estimator's assertion is the other's power
    # check (a test both passed would say nothing).
    from tfp_gradest.diagnostics import gradient_moments, signal_to_noise_ratio

    problem = ju.ToyGaussian()
    snr = {"iwae": [], "iwae_dreg": []}
    for k in SNR_KS:
        dreg = gradient_moments(_phi_draws("iwae_dreg", problem, k, SNR_DRAWS, seed=k))
        iwae = gradient_moments(_phi_draws("iwae", problem, k, SNR_DRAWS, seed=k + 1))
        snr["iwae_dreg"].append(signal_to_noise_ratio(dreg))
        snr["iwae"].append(signal_to_noise_ratio(iwae, signal=dreg))
    slope = {
        name: float(np.log(values[1] / values[0]) / np.log(SNR_KS[1] / SNR_KS[0]))
        for name, values in snr.items()
    }
    assert slope["iwae_dreg"] > 0.3, (snr, slope)
    assert slope["iwae"] < -0.3, (snr, slope)
