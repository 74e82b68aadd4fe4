"""The problems where GDReG and VarGrad show their effect: `hierarchical_gaussian` (a learnable
prior conditional) and `latent_bits` (binary latents), their exact answers, and `compare` on them
(problem-specific sizes, estimator options on the command line, clean refusals)."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_gradest as tge
from tfp_gradest import cli
from tfp_gradest.problems import base

CHEAP = ["--draws", "20", "--reference-draws", "40", "--repeats", "1", "--no-plot"]


def _log_marginal(problem):
    """`log p(x)`: per entry `x ~ N(c b, c² (a² + s²) + 1)`."""
    t = problem.model_parameters()
    variance = t["c"] ** 2 * (t["a"] ** 2 + np.exp(2 * t["log_s"])) + 1
    return float(
        np.sum(
            -0.5 * np.log(2 * np.pi * variance)
            - (problem.x - t["c"] * t["b"]) ** 2 / (2 * variance)
        )
    )


# --- hierarchical_gaussian: exact checks ----------------------------------------------------


def test_hierarchical_gaussian_elbo_is_log_marginal_at_the_posterior_and_below_it_elsewhere():
    # At the exact posterior every log-weight is log p(x): the closed-form ELBO and the K = 2
    # quadrature both equal it; a perturbed surrogate has a gap (power of the check).
    exact = tge.problems.get("hierarchical_gaussian", dim=1, perturbation=0.0, dtype="float64")
    log_px = _log_marginal(exact)
    np.testing.assert_allclose(float(exact.exact_objective()), log_px, rtol=1e-12)
    np.testing.assert_allclose(float(exact.iwae_bound_by_quadrature()), log_px, rtol=1e-10)
    z = exact.surrogate.sample(4, seed=[1, 2])
    np.testing.assert_allclose(exact.target_log_prob(*z) - exact.surrogate.log_prob(z), log_px)
    moved = tge.problems.get("hierarchical_gaussian", dim=1, start="fixed", dtype="float64")
    elbo, iwae2 = float(moved.exact_objective()), float(moved.iwae_bound_by_quadrature())
    assert elbo < iwae2 < _log_marginal(moved) and iwae2 - elbo > 1e-3


def test_hierarchical_gaussian_elbo_matches_monte_carlo():
    problem = tge.problems.get("hierarchical_gaussian", start="fixed", dtype="float64")
    z = problem.surrogate.sample(20000, seed=[3, 4])
    log_w = (problem.target_log_prob(*z) - problem.surrogate.log_prob(z)).numpy()
    se = log_w.std() / np.sqrt(log_w.size)
    assert abs(log_w.mean() - float(problem.exact_objective())) < 4 * se
    assert abs(log_w.mean() - (float(problem.exact_objective()) + 0.1)) > 4 * se  # power


def _gradients(problem, estimator):
    with tf.GradientTape() as tape:
        loss = problem.loss_fn(estimator, 2, 8)(tf.constant([5, 6]))
    return [g.numpy() for g in tape.gradient(loss, problem.variables)]


def test_gdreg_differs_from_iwae_dreg_where_the_problem_says_and_only_there():
    # Same samples: the declared prior conditional (a, b, log s) gets other gradients, and
    # with "transform" q(z2)'s parameters (which reach q(z1 | z2)) too; q(z1 | z2)'s and the
    # likelihood's c do not. ("keep", the default, keeps IWAE-DReG's surrogate gradient.)
    problem = tge.problems.get("hierarchical_gaussian", dtype="float64")
    dreg = _gradients(problem, "iwae_dreg")
    names = "m2 r2 w m1 r1 a b log_s c".split()
    for estimator, expected in [
        ("gdreg", {"a", "b", "log_s"}),
        (tge.estimators.GDReG("transform"), {"m2", "r2", "a", "b", "log_s"}),
    ]:
        gdreg = _gradients(problem, estimator)
        differs = {n for n, d, g in zip(names, dreg, gdreg) if not np.allclose(d, g, rtol=1e-10)}
        assert differs == expected, estimator
    undeclared = tge.problems.get(
        "hierarchical_gaussian", declare_latent_distributions=False, dtype="float64"
    )
    keep = tge.estimators.GDReG("keep")
    for d, g in zip(_gradients(undeclared, "iwae_dreg"), _gradients(undeclared, keep)):
        np.testing.assert_allclose(g, d, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["hierarchical_gaussian", "latent_bits"])
def test_the_problem_on_jax_is_the_problem_on_tensorflow(name):
    jax = pytest.importorskip("jax")
    problem = tge.problems.get(name)
    tfp_jax = base.tfp_module("jax")
    surrogate = problem.build_surrogate(problem.parameters(), tfp_jax)
    z = tf.nest.map_structure(np.asarray, problem.surrogate.sample(3, seed=[4, 5]))
    np.testing.assert_allclose(
        surrogate.log_prob(z), problem.surrogate.log_prob(z).numpy(), rtol=1e-5
    )
    args = z if isinstance(z, list) else [z]
    np.testing.assert_allclose(
        problem.target_log_prob_fn("jax")(*map(jax.numpy.asarray, args)),
        problem.target_log_prob(*args).numpy(),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        problem.exact_objective_fn("jax")(problem.parameters()),
        problem.exact_objective().numpy(),
        rtol=1e-5,
    )


# --- latent_bits: exact checks -------------------------------------------------------------


def test_latent_bits_enumerated_elbo_matches_monte_carlo_and_bounds_log_marginal():
    problem = tge.problems.get("latent_bits", dtype="float64")
    z = problem.surrogate.sample(20000, seed=[7, 8])
    log_w = (problem.target_log_prob(z) - problem.surrogate.log_prob(z)).numpy()
    se = log_w.std() / np.sqrt(log_w.size)
    elbo = float(problem.exact_objective())
    assert abs(log_w.mean() - elbo) < 4 * se and abs(log_w.mean() - (elbo + 0.5)) > 4 * se
    assert elbo < problem.log_marginal()
    with pytest.raises(ValueError, match="Received: num_latents=20"):
        tge.problems.get("latent_bits", num_latents=20)


# --- compare on them ----------------------------------------------------------------------


def test_compare_uses_each_problems_own_sizes_and_estimator_options(tmp_path, capsys):
    (result,) = cli.compare(
        ["compare", "--problem", "latent_bits", "--draws", "400", "--repeats", "1", "--no-plot",
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert (result.case.sample_size, result.case.importance_sample_size) == (8, 1)
    labels = [r.estimator for r in result.reports]
    assert labels == ["score_function", "vargrad", "ScoreFunction(baseline='leave_one_out')"]
    assert result.reference.startswith("exact (closed-form ELBO)")
    assert not any(result.reports.biased(r) for r in result.reports)
    # The leave-one-out baselines cut the variance (measured about 7x at these settings).
    assert result.reports[1].mean_variance < 0.5 * result.reports[0].mean_variance
    # The table's label is accepted back on the command line, and names the run's files.
    (again,) = cli.compare(
        ["compare", "--problem", "latent_bits", "--estimators",
         "ScoreFunction(baseline='leave_one_out'),vargrad", "-S", "4", *CHEAP,
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert again.reports[0].estimator == labels[2]
    stem = "latent_bits-ScoreFunction_baseline=leave_one_out+vargrad-S4-draws20-ref40-repeats1"
    assert (tmp_path / f"{stem}.csv").exists()
    # VIMCO (K > 1, the IWAE bound): its reference is the mean of VIMCO draws.
    (vimco,) = cli.compare(
        ["compare", "--problem", "latent_bits", "--estimators", "vimco", "-S", "1", "-K", "4",
         *CHEAP, "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert "vimco draws" in vimco.reference


def test_hierarchical_gaussian_compares_at_k16_by_default(tmp_path):
    (result,) = cli.compare(["compare", "--problem", "hierarchical_gaussian", *CHEAP,
                             "--output-dir", str(tmp_path)])  # fmt: skip
    assert result.case.importance_sample_size == 16
    assert [r.estimator for r in result.reports] == [
        "iwae", "iwae_dreg", "gdreg", "GDReG(conditional_scores='transform')"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "estimators,match",
    [
        ("score_function,stl", "STL estimator differentiates through the samples"),
        ("reparameterization", "must be fully reparameterized"),
        ("score_function(baseline=mean)", "Received: baseline='mean'"),
        ("score_function(beta=1)", r"options it does not take: \['beta'\]"),
        ("score_function(baseline)", "options are key=value"),
        ("score_function(", "a name with its options as a call"),
    ],
)
def test_estimators_that_do_not_apply_to_binary_latents_are_refused_cleanly(
    estimators, match, tmp_path
):
    with pytest.raises(SystemExit, match=match):
        cli.compare(["compare", "--problem", "latent_bits", "--estimators", estimators, *CHEAP,
                     "--output-dir", str(tmp_path)])  # fmt: skip


def test_estimator_options_split_at_top_level_commas():
    from tfp_gradest.cli._arguments import estimator_config, split_estimators

    assert split_estimators("a, b(x=1, y='u'),c") == ("a", "b(x=1, y='u')", "c")
    assert estimator_config("stl") == "stl"
    assert estimator_config("score_function(baseline=leave_one_out, decay=0.5)") == {
        "class_name": "score_function",
        "config": {"baseline": "leave_one_out", "decay": 0.5},
    }
